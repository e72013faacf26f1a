//! A throwaway PostgreSQL cluster for the tests: Debian's `postgresql` package,
//! `initdb` as an unprivileged user (`postgres` when the tests run as root, since
//! initdb refuses root), `pg_ctl start` on a free port on 127.0.0.1, one database.
//!
//! One cluster per test process (nextest runs each test in its own process; the
//! initdb is done once and copied, so a cluster starts in well under a second). A
//! watchdog shell holds the server: it reads a pipe whose other end only this process
//! holds, so when the process ends in any way (success, panic, SIGKILL) the server is
//! stopped and its directory removed.
//!
//! `STATESAFE_PG_URL` points the tests at an existing server instead (a database they
//! may create tables in). When no server can be started, [`cluster`] returns `None`
//! after printing `SKIPPED` and appending `SKIPPED postgres: why` to the file named by
//! `$STATESAFE_SUMMARY`; with `CI=true` it panics instead: CI installs the package,
//! so a missing server there is a failure.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Where Debian's package puts the server binaries (newest version first).
const BIN_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];

/// Server settings besides the port and socket directory.
const SERVER_OPTIONS: &str =
    "-c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=16MB";

/// A role of the test cluster that must log in with a password (over TCP from
/// 127.0.0.1, with SCRAM), and its password: every other role is trusted.
pub const PASSWORD_USER: (&str, &str) = ("statesafe_pw", "pw-for-tests");

/// A role of the test cluster that may only connect over TLS.
pub const TLS_USER: &str = "statesafe_tls";

/// The database every test uses (each test uses its own state names and tables).
pub const DATABASE: &str = "statesafe_test";

/// A running server: its connection URL (without a state), for as long as the process.
pub struct Cluster {
    /// `postgres://USER@127.0.0.1:PORT/statesafe_test`.
    pub base: String,
    pub port: u16,
    pub user: String,
    /// The write end of the watchdog's pipe: closed when this process ends.
    _watchdog: Option<Mutex<ChildStdin>>,
    /// How to run `pg_ctl` on this cluster (`None`: a server given by URL).
    control: Option<Control>,
}

/// What stopping and starting the server again needs.
struct Control {
    bin: PathBuf,
    run_as: Vec<String>,
    dir: PathBuf,
}

impl Cluster {
    /// The URL of state `state` (in the default table).
    pub fn url(&self, state: &str) -> String {
        format!("{}?state={state}", self.base)
    }

    /// The URL of state `state` with more query parameters (`table=t&schema=s`).
    pub fn url_with(&self, state: &str, extra: &str) -> String {
        format!("{}?state={state}&{extra}", self.base)
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`: no
    /// checkpoint, clients cut off), then starts it again (crash recovery from the
    /// WAL). `false` for a server given by `STATESAFE_PG_URL`, which is not ours.
    pub fn crash_and_restart(&self) -> bool {
        let Some(c) = &self.control else {
            return false;
        };
        let data = c.dir.join("data");
        let pg_ctl = c.bin.join("pg_ctl");
        let run = |args: &[&str]| {
            let mut cmd = Command::new(c.run_as.first().map_or(pg_ctl.as_os_str(), |s| s.as_ref()));
            if !c.run_as.is_empty() {
                cmd.args(&c.run_as[1..]).arg(&pg_ctl);
            }
            let out = cmd
                .arg("-D")
                .arg(&data)
                .args(args)
                .stdout(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "pg_ctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["-m", "immediate", "-w", "stop"]);
        let d = c.dir.display();
        let options = format!(
            "-p {} -k {d} {SERVER_OPTIONS} -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key",
            self.port
        );
        let log = c.dir.join("log");
        run(&[
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "start",
        ]);
        true
    }

    /// Whether this is a cluster the fixture started (with [`PASSWORD_USER`],
    /// [`TLS_USER`] and the certificates).
    pub fn ours(&self) -> bool {
        self.control.is_some()
    }

    /// The PEM file of a certificate the fixture made: `ca.crt` (signed the server's,
    /// which names `statesafe-test.invalid` only) or `other-ca.crt` (unrelated).
    pub fn cert(&self, name: &str) -> Option<PathBuf> {
        self.control.as_ref().map(|c| c.dir.join(name))
    }

    /// A plain client of the test database, for looking at the tables directly.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.base, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test server `{}`: {e}", self.base))
    }
}

/// A PgBouncer in transaction pooling mode in front of a [`Cluster`], stopped when
/// this process ends (a watchdog shell, as for the server).
pub struct Bouncer {
    /// `postgres://USER@127.0.0.1:PORT/statesafe_test` through the bouncer.
    pub base: String,
    _watchdog: Mutex<ChildStdin>,
}

impl Bouncer {
    pub fn url(&self, state: &str) -> String {
        format!("{}?state={state}", self.base)
    }
}

impl Cluster {
    /// Starts Debian's `pgbouncer` (`pool_mode = transaction`, 4 server connections)
    /// on a free port in front of this cluster; `None`, said loudly, when it cannot
    /// be started (with `CI=true`, a failure: `.ci/run` installs it).
    pub fn bouncer(&self) -> Option<Bouncer> {
        match self.start_bouncer() {
            Ok(b) => Some(b),
            Err(why) => {
                skipped(&format!("pgbouncer: {why}"));
                None
            }
        }
    }

    fn start_bouncer(&self) -> Result<Bouncer, String> {
        let Some(c) = &self.control else {
            return Err("the server was given by STATESAFE_PG_URL".into());
        };
        let exe = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .ok_or("not installed (apt-get install pgbouncer)")?;
        let port = free_port()?;
        let dir = c.dir.join(format!("bouncer-{port}"));
        let user = &self.user;
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port={}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {d}/users\npool_mode = transaction\n\
             default_pool_size = 4\nmax_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {d}/log\npidfile = {d}/pid\n",
            self.port,
            d = dir.display()
        );
        // Runs as the cluster's user (pgbouncer refuses root); the watchdog stops it
        // when this process ends.
        let script = r#"
set -u
dir=$1 exe=$2 port=$3
mkdir -p "$dir" && printf '%s' "$CONFIG" > "$dir/ini" && printf '"%s" ""
' "$USER_NAME" > "$dir/users" || exit 1
"$exe" "$dir/ini" & pid=$!
i=0
while ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do
  i=$((i+1)); if [ $i -gt 500 ] || ! kill -0 $pid 2>/dev/null; then echo "failed: pgbouncer did not start:"; cat "$dir/log"; kill $pid 2>/dev/null; exit 1; fi
  sleep 0.02
done
echo ready
cat >/dev/null
kill $pid; wait $pid
rm -rf "$dir"
"#;
        let stdin = watchdog(
            &c.run_as,
            "bash",
            script,
            &[dir.as_os_str(), exe.as_ref(), port.to_string().as_ref()],
            &[("CONFIG", config.as_str()), ("USER_NAME", user.as_str())],
        )
        .map_err(|said| format!("pgbouncer's watchdog: {said}"))?;
        Ok(Bouncer {
            base: format!("postgres://{user}@127.0.0.1:{port}/{DATABASE}"),
            _watchdog: Mutex::new(stdin),
        })
    }
}

/// A store of the state at `url`, with a lock timeout long enough for a loaded machine.
pub fn open(url: &str) -> statesafe::Store {
    statesafe::Store::options()
        .lock_timeout(std::time::Duration::from_secs(30))
        .open_url(url)
        .unwrap()
}

/// `threads` threads each increment `/n` `rounds` times, each through the store
/// `store()` gives it (a store of its own, or one shared); returns once all are done.
pub fn increment_n(
    threads: u64,
    rounds: u64,
    store: impl Fn() -> std::sync::Arc<statesafe::Store>,
) {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = store();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    store
                        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
                        .unwrap();
                }
            })
        })
        .collect();
    for t in handles {
        t.join().unwrap();
    }
}

/// The process's cluster, started on first use; `None` (said loudly) when it cannot be.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(c) => Some(c),
        Err(why) => {
            skipped(why);
            None
        }
    }
}

/// A second cluster of this process, for a test of two servers (its own port,
/// directory and watchdog); `None` (said loudly) when the first was given by
/// `STATESAFE_PG_URL` or a second cannot be started.
pub fn another_cluster() -> Option<Cluster> {
    if std::env::var_os("STATESAFE_PG_URL").is_some() {
        skipped("a second server: the first was given by STATESAFE_PG_URL");
        return None;
    }
    match start() {
        Ok(c) => Some(c),
        Err(why) => {
            skipped(&why);
            None
        }
    }
}

/// Says loudly that a test could not run here, and why (see the module docs).
pub fn skipped(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "postgres: {why} (CI=true: the PostgreSQL tests must run; .ci/run installs `postgresql`)"
        );
    }
    println!("SKIPPED postgres: {why}");
    eprintln!("SKIPPED postgres: {why}");
    if let Some(summary) = std::env::var_os("STATESAFE_SUMMARY")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(summary)
    {
        let _ = writeln!(f, "SKIPPED postgres: {why}");
    }
}

fn start() -> Result<Cluster, String> {
    if let Ok(base) = std::env::var("STATESAFE_PG_URL") {
        let user = base
            .split("://")
            .nth(1)
            .and_then(|r| r.split('@').next())
            .unwrap_or("postgres")
            .to_string();
        return Ok(Cluster {
            base,
            port: 0,
            user,
            _watchdog: None,
            control: None,
        });
    }
    let bin = BIN_DIRS
        .iter()
        .map(Path::new)
        .find(|d| d.join("initdb").is_file())
        .ok_or("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)")?;
    let root = rustix::process::geteuid().is_root();
    let (user, run_as): (String, Vec<String>) = if root {
        // initdb refuses to run as root: the `postgres` user the package creates.
        (
            "postgres".into(),
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
            .map(String::from)
            .to_vec(),
        )
    } else {
        (whoami(), Vec::new())
    };
    let uid_gid = if root { Some(postgres_ids()?) } else { None };
    let template = template(bin, &run_as, uid_gid)?;
    let dir = tempfile::Builder::new()
        .prefix("statesafe-pg-")
        .tempdir()
        .map_err(|e| format!("create a directory for the cluster: {e}"))?
        .keep();
    if let Some((uid, gid)) = uid_gid {
        chown(&dir, uid, gid)?;
    }
    let mut last = String::new();
    for _attempt in 0..3 {
        let port = free_port()?;
        match launch(bin, &run_as, &template, &dir, port) {
            Ok(watchdog) => {
                let base = format!("postgres://{user}@127.0.0.1:{port}/{DATABASE}");
                return Ok(Cluster {
                    base,
                    port,
                    user,
                    _watchdog: Some(Mutex::new(watchdog)),
                    control: Some(Control {
                        bin: bin.to_path_buf(),
                        run_as: run_as.clone(),
                        dir: dir.clone(),
                    }),
                });
            }
            // Most likely the port was taken between our probe and the server's bind.
            Err(e) => last = e,
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Err(last)
}

/// Starts the server from a copy of `template` under `dir`; returns the watchdog's
/// pipe once the server accepts connections and the database exists.
fn launch(
    bin: &Path,
    run_as: &[String],
    template: &Path,
    dir: &Path,
    port: u16,
) -> Result<ChildStdin, String> {
    // The watchdog: start, say `ready`, wait for EOF on stdin (this process's end),
    // stop at once (the data is thrown away) and remove everything.
    let script = r#"
set -u
bin=$1 template=$2 dir=$3 port=$4 db=$5
rm -rf "$dir/data"
cp -a "$template" "$dir/data" 2>&1 || exit 1
chmod 700 "$dir/data"
# One role that must give a password, one that must use TLS (the others are trusted).
{ echo "host all $PW_USER 127.0.0.1/32 scram-sha-256"
  echo "hostnossl all $TLS_USER 127.0.0.1/32 reject"
  cat "$dir/data/pg_hba.conf"; } > "$dir/hba" \
  && mv "$dir/hba" "$dir/data/pg_hba.conf" || exit 1
# TLS: a test CA, a server certificate it signs for `statesafe-test.invalid` only (so
# that verify-full to 127.0.0.1 fails and verify-ca passes), and an unrelated CA.
(
  cd "$dir" || exit 1
  ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj /CN=statesafe-test-ca &&
  openssl req -x509 $ec -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=other-ca &&
  openssl req $ec -keyout server.key -out server.csr -subj /CN=statesafe-test.invalid &&
  printf 'subjectAltName=DNS:statesafe-test.invalid\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > server.ext &&
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext &&
  chmod 600 server.key && chmod 644 ca.crt other-ca.crt
) >"$dir/openssl.log" 2>&1 || { echo "failed: make the test certificates:"; cat "$dir/openssl.log"; exit 1; }
if ! "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-p $port -k $dir $SERVER_OPTIONS -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" start >/dev/null; then
  echo "failed: the server did not start; its log:"; cat "$dir/log"; rm -rf "$dir/data"; exit 1
fi
if ! "$bin/createdb" -h 127.0.0.1 -p "$port" "$db" 2>&1; then
  echo "failed: createdb"; "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null; exit 1
fi
if ! "$bin/psql" -q -h 127.0.0.1 -p "$port" -d "$db" -c "CREATE ROLE $PW_USER LOGIN PASSWORD '$PW'; GRANT CREATE ON SCHEMA public TO $PW_USER; CREATE ROLE $TLS_USER LOGIN; GRANT CREATE ON SCHEMA public TO $TLS_USER" 2>&1; then
  echo "failed: create the password role"; "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null; exit 1
fi
echo ready
cat >/dev/null
"$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
rm -rf "$dir"
"#;
    watchdog(
        run_as,
        "sh",
        script,
        &[
            bin.as_os_str(),
            template.as_os_str(),
            dir.as_os_str(),
            port.to_string().as_ref(),
            DATABASE.as_ref(),
        ],
        &[
            ("SERVER_OPTIONS", SERVER_OPTIONS),
            ("PW_USER", PASSWORD_USER.0),
            ("PW", PASSWORD_USER.1),
            ("TLS_USER", TLS_USER),
        ],
    )
    .map_err(|said| format!("could not start PostgreSQL on 127.0.0.1:{port}: {said}"))
}

/// Runs a watchdog `script` in `shell` (as `run_as`, when given) with `args` and
/// `envs`; returns the write end of its stdin once it prints `ready`, or what it
/// printed instead. It lives until that pipe closes, that is until this process ends
/// in any way, and then stops what it started and removes its files.
fn watchdog(
    run_as: &[String],
    shell: &str,
    script: &str,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
) -> Result<ChildStdin, String> {
    let mut cmd = Command::new(run_as.first().map_or(shell, String::as_str));
    if !run_as.is_empty() {
        cmd.args(&run_as[1..]).arg(shell);
    }
    let mut child = cmd
        .arg("-c")
        .arg(script)
        .arg(shell)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Not inherited: the watchdog outlives the test, and a test runner waits for
        // (or reports as leaked) anything holding its output open.
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the watchdog shell: {e}"))?;
    let stdin = child.stdin.take().expect("invariant: piped");
    let stdout = child.stdout.take().expect("invariant: piped");
    let mut said = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("read the watchdog: {e}"))?;
        if line == "ready" {
            // Dropping `child` neither kills nor waits for it: the watchdog lives until
            // `stdin` closes.
            return Ok(stdin);
        }
        said.push_str(&line);
        said.push('\n');
    }
    drop(stdin);
    let _ = child.wait();
    Err(said.trim().to_string())
}

/// An initdb'd data directory to copy, made once per target directory and server
/// version (under a file lock: test processes start it concurrently).
fn template(bin: &Path, run_as: &[String], owner: Option<(u32, u32)>) -> Result<PathBuf, String> {
    let version = bin
        .parent()
        .and_then(Path::file_name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Tests have cargo's target tmpdir; the benchmark (which includes this file) the
    // system's.
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map_or_else(|| std::env::temp_dir().join("statesafe-pg"), PathBuf::from)
        .join(format!("pg{version}-template-{}", owner.map_or(0, |o| o.0)));
    let done = base.join("done");
    if done.exists() {
        return Ok(base.join("data"));
    }
    std::fs::create_dir_all(&base).map_err(|e| format!("create `{}`: {e}", base.display()))?;
    let lock = std::fs::File::create(base.with_extension("lock"))
        .map_err(|e| format!("create the template lock: {e}"))?;
    lock.lock().map_err(|e| format!("lock the template: {e}"))?;
    if done.exists() {
        return Ok(base.join("data"));
    }
    if let Some((uid, gid)) = owner {
        chown(&base, uid, gid)?;
    }
    let data = base.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let mut cmd = Command::new(
        run_as
            .first()
            .map_or(bin.join("initdb").into_os_string(), Into::into),
    );
    if !run_as.is_empty() {
        cmd.args(&run_as[1..]).arg(bin.join("initdb"));
    }
    let out = cmd
        .args(["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "-D"])
        .arg(&data)
        .output()
        .map_err(|e| format!("run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(&done, b"").map_err(|e| format!("mark the template done: {e}"))?;
    Ok(data)
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("find a free port on 127.0.0.1: {e}"))?;
    Ok(listener
        .local_addr()
        .map_err(|e| format!("find a free port: {e}"))?
        .port())
}

fn postgres_ids() -> Result<(u32, u32), String> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| "running as root, and there is no `postgres` user to run initdb as (apt-get install postgresql creates it)".into())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown `{}` to the postgres user: {e}", path.display()))
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| rustix::process::geteuid().as_raw().to_string())
}
