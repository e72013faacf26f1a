//! `statesafe man [--dir DIR]`: the manual page(s) in roff.
//!
//! Without `--dir`, one page holds everything: the global options, then every
//! subcommand with its synopsis, description, options and examples, then the exit
//! codes; `statesafe man > statesafe.1` is the whole manual. `--dir` writes
//! `statesafe.1` and one `statesafe-SUBCOMMAND.1` per subcommand instead.

use std::io;

use clap::CommandFactory;
use clap_mangen::Man;

use crate::cli::{Cli, ManArgs};
use crate::error::{CliError, Result};
use crate::output::Output;

/// Prints the single manual page, or writes one page per subcommand into `--dir`.
pub fn run(args: ManArgs, out: &Output) -> Result<()> {
    match args.dir {
        None => {
            let page = single_page().map_err(|e| CliError::io("render the manual page", e))?;
            out.data(&page)
        }
        Some(dir) => {
            clap_mangen::generate_to(crate::cli::command(), &dir).map_err(|e| {
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

/// The whole manual as one roff page.
fn single_page() -> io::Result<Vec<u8>> {
    // With the exit-code table (`--help`'s long text) for the page's closing section.
    let mut top = crate::cli::command().disable_help_subcommand(true);
    top.build();
    // The subcommands' own texts, without the table repeated under each of them.
    let mut plain = Cli::command().disable_help_subcommand(true);
    plain.build();

    let man = Man::new(top.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    page.extend(section(|w| man.render_name_section(w))?);
    page.extend(section(|w| man.render_synopsis_section(w))?);
    page.extend(section(|w| man.render_description_section(w))?);
    page.extend(section(|w| man.render_options_section(w))?);

    page.extend_from_slice(b".SH COMMANDS\n");
    for sub in plain.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        page.extend(format!(".SS \"{}\"\n", name.replace('-', "\\-")).as_bytes());
        let man = Man::new(sub.clone());
        page.extend(body(section(|w| man.render_synopsis_section(w))?));
        page.extend_from_slice(b".PP\n");
        page.extend(body(section(|w| man.render_description_section(w))?));
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            page.extend_from_slice(b".PP\nOptions:\n");
            page.extend(body(section(|w| man.render_options_section(w))?));
        }
        if sub.get_after_help().is_some() {
            page.extend_from_slice(b".PP\n.nf\n");
            page.extend(body(section(|w| man.render_extra_section(w))?));
            page.extend_from_slice(b".fi\n");
        }
    }

    page.extend_from_slice(b".SH \"EXIT STATUS\"\n.nf\n");
    page.extend(body(section(|w| man.render_extra_section(w))?));
    page.extend_from_slice(b".fi\n");
    page.extend(section(|w| man.render_version_section(w))?);
    Ok(page)
}

/// One section as clap_mangen renders it, without the preamble every rendering
/// repeats (the apostrophe string definitions, already at the top of the page).
fn section(render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    render(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .lines()
        .filter(|l| !l.starts_with(".ie \\n(.g .ds Aq") && !l.starts_with(".el .ds Aq"))
        .flat_map(|l| [l, "\n"])
        .collect::<String>()
        .into_bytes())
}

/// A section's text without its `.SH` heading (it goes under a heading of ours).
fn body(section: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&section);
    text.lines()
        .filter(|l| !l.starts_with(".SH "))
        .flat_map(|l| [l, "\n"])
        .collect::<String>()
        .into_bytes()
}
