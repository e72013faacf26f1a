//! `statesafe man [--dir DIR]`: the manual page(s) in roff.

use crate::cli::ManArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Prints `statesafe.1`, or writes it and one page per subcommand into `--dir`.
pub fn run(args: ManArgs, out: &Output) -> Result<()> {
    let command = crate::cli::command();
    match args.dir {
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut buf)
                .map_err(|e| CliError::io("render the manual page", e))?;
            out.data(&buf)
        }
        Some(dir) => {
            clap_mangen::generate_to(command, &dir).map_err(|e| {
                CliError::io(
                    format_args!("write manual pages into `{}`", dir.display()),
                    e,
                )
            })?;
            if out.json {
                out.json_line(&serde_json::json!({ "dir": dir.to_string_lossy() }))?;
            }
            Ok(())
        }
    }
}
