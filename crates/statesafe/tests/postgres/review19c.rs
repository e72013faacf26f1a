//! Review, session 19 (review19c): the Unix-socket password check, the URL `@`
//! refusal and redaction, red-teamed. Each test here fails on the code it was written
//! against; each is fixed (the child helper stays ignored: it runs only as its test's child).

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, Sender};

use statesafe::Store;

use crate::cluster;

const PASSWORD: &str = "hunter2-review19c";

/// A fake server on one connection: answers a TLS request with `N`, reads the start-up
/// message, asks for the password in clear text (AuthenticationCleartextPassword) and
/// sends whatever comes back on `tx`.
fn ask_for_the_password(mut conn: impl Read + Write, tx: Sender<String>) {
    let read_message = |conn: &mut dyn Read| -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        conn.read_exact(&mut body).ok()?;
        Some(body)
    };
    let Some(first) = read_message(&mut conn) else {
        return;
    };
    if first == 80877103u32.to_be_bytes() {
        let _ = conn.write_all(b"N");
        if read_message(&mut conn).is_none() {
            return;
        }
    }
    let _ = conn.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]);
    let mut reply = vec![0u8; 256];
    if let Ok(n) = conn.read(&mut reply) {
        let _ = tx.send(String::from_utf8_lossy(&reply[..n]).into_owned());
    }
}

/// What the fake servers received (each connection's reply is sent before it closes,
/// and the client's error comes after it).
pub(crate) fn collected(rx: &Receiver<String>) -> Vec<String> {
    std::iter::from_fn(|| rx.recv_timeout(std::time::Duration::from_millis(500)).ok()).collect()
}

/// A fake server listening at `path` ([`ask_for_the_password`] on each connection).
pub(crate) fn unix_listener(path: &std::path::Path) -> Receiver<String> {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || ask_for_the_password(conn, tx));
        }
    });
    rx
}

fn tcp_listener() -> (u16, Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || ask_for_the_password(conn, tx));
        }
    });
    (port, rx)
}

/// `planted_socket_risk` trusts any directory "writable by its owner alone" without
/// asking who the owner is: a directory another local user made (say `/tmp/pgsock`,
/// made first by uid 64001 while the server that normally makes it is down, mode
/// 0755, or a symlink of theirs to one) passes, and the password goes to their socket.
/// On 2bd96ec the planted listener received `p\0\0\0\x16hunter2-review19c\0`.
#[test]
fn review19c_a_password_is_not_sent_to_a_socket_in_a_directory_another_user_owns() {
    use std::os::unix::fs::PermissionsExt;
    if rustix::process::geteuid().as_raw() != 0 {
        cluster::skipped("review19c directory owner: needs root to chown");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("pgsock");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = 5998;
    let socket = theirs.join(format!(".s.PGSQL.{port}"));
    let rx = unix_listener(&socket);
    for path in [&theirs, &socket] {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(64001)),
            Some(rustix::fs::Gid::from_raw(64001)),
        )
        .unwrap();
    }
    let url = format!(
        "postgres://bot@localhost:{port}/db?state=a&host={}&password={PASSWORD}&connect_timeout=2",
        theirs.display()
    );
    let opened = Store::<serde_json::Value>::options().open_url(&url);
    let collected = collected(&rx);
    assert!(
        collected.iter().all(|r| !r.contains(PASSWORD)),
        "the socket of uid 64001 (in its own directory, mode 0755) collected the password: {collected:?}"
    );
    let Err(err) = opened else {
        panic!("a store was opened over another user's socket")
    };
    assert_eq!(err.kind(), "unsafe", "{err}");
}

/// The TCP guard (no password in clear text or MD5 without a verified certificate) is
/// applied only when every host of the URL is TCP; the planted-socket check looks at
/// the Unix hosts only. A host list with one Unix socket (`host=/var/run/postgresql`,
/// here a directory that does not exist) and a TCP host, or a Unix host with a
/// `hostaddr=` (the client library then connects over TCP to it), sends the password
/// in clear text to whatever answers at the TCP address. On 2bd96ec the TCP listener
/// received `p\0\0\0\x16hunter2-review19c\0` for each of the two forms.
#[test]
fn review19c_a_password_is_not_sent_in_clear_text_over_tcp_in_a_host_list_with_a_unix_socket() {
    let private = tempfile::tempdir().unwrap();
    for form in ["hostaddr", "list"] {
        let (port, rx) = tcp_listener();
        let url = match form {
            "list" => format!(
                "postgres://bot@127.0.0.1:{port}/db?state=a&host=/nonexistent-review19c&password={PASSWORD}&connect_timeout=2"
            ),
            _ => format!(
                "postgres://bot@{}:{port}/db?state=a&hostaddr=127.0.0.1&password={PASSWORD}&connect_timeout=2",
                private.path().display().to_string().replace('/', "%2F")
            ),
        };
        let opened = Store::<serde_json::Value>::options().open_url(&url);
        let collected = collected(&rx);
        assert!(
            collected.iter().all(|r| !r.contains(PASSWORD)),
            "{form}: the TCP listener got the password in clear text: {collected:?}"
        );
        assert!(opened.is_err(), "{form}: opened");
    }
}

/// The userinfo of a URL without one: the client library takes the text up to the
/// first `@` of the whole URL for the userinfo, so a `password=` in the query with an
/// `@` (`postgres:///ops?host=/var/run/postgresql&password=p@ss`, a common form for a
/// Unix socket) makes everything before that `@` the "user name". The redaction sees a
/// userinfo without `:` and shows it whole; `unencoded_at_in_userinfo` sees no `@`
/// after the first one and lets it through, and `has_password` says there is none
/// (the CLI's refusal of a password on the command line does not fire). With a port
/// (`127.0.0.1:1/db?...password=p@ss`) it is hidden only because the port's `:` is
/// taken for the user name's end. On 2bd96ec the message was:
/// `postgresql:///db?host=/var/run/postgresql&state=a&password=hunter2@review19c`
/// cannot be used as a state file: it names no state: add `?state=NAME` ...
#[test]
fn review19c_a_query_password_with_an_at_is_never_shown() {
    for url in [
        "postgres://127.0.0.1:1/db?state=a&password=hunter2@review19c",
        "postgres://review19c.invalid/db?state=a&password=hunter2@review19c",
        "postgresql:///db?host=/var/run/postgresql&state=a&password=hunter2@review19c",
    ] {
        let err = match Store::<serde_json::Value>::options().open_url(url) {
            Ok(_) => panic!("{url}: opened"),
            Err(e) => e,
        };
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{url}: {shown}");
        assert!(
            statesafe::postgres::has_password(url),
            "{url}: has_password says it has none"
        );
    }
}

/// A password with an `@` followed by a `?` (`hun@ter?2x`): the library reads the
/// host up to the `?`, which `unencoded_at_in_userinfo` takes for the query's start,
/// so it finds no second `@` and does not refuse; the redaction then hides only up to
/// the first `@` and shows the password's tail. On 2bd96ec the message was
/// `postgres://bot:***@ter?2review19c@127.0.0.1:1/db?state=a: it names no state ...`.
#[test]
fn review19c_the_tail_of_a_password_with_an_at_and_a_question_mark_is_never_shown() {
    let url = "postgres://bot:hun@ter?2review19c@127.0.0.1:1/db?state=a&connect_timeout=1";
    let err = match Store::<serde_json::Value>::options().open_url(url) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    };
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("2review19c"), "{shown}");
    assert!(!shown.contains("ter?"), "{shown}");
}

/// A database name may hold an `@` (RFC 3986 allows it in the path unencoded, and the
/// client library takes the userinfo up to the first `@` only, so
/// `postgres://bot@h/team@corp` is user `bot`, database `team@corp`). The reviewer
/// (review19c) found it refused since 958d62d. Kept so, on purpose: such a URL cannot
/// be told from a password with an `@` not written `%40` (`bot:p@ss@h/db`), whose tail
/// the library would take for the host; the refusal says to write `%40`, and the
/// database is reached as `team%40corp`.
#[test]
fn review19c_a_database_name_with_an_at_is_refused_with_the_way_to_write_it() {
    let url = "postgres://bot@127.0.0.1:1/team@corp?state=a&connect_timeout=1";
    let err = match Store::<serde_json::Value>::options().open_url(url) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), "bad_path", "{err}");
    assert!(err.to_string().contains("%40"), "{err}");
    let encoded = "postgres://bot@127.0.0.1:1/team%40corp?state=a&connect_timeout=1";
    if let Err(e) = Store::<serde_json::Value>::options().open_url(encoded) {
        assert_ne!(e.kind(), "bad_path", "{e}");
    }
}

/// `planted_socket_risk` returns "safe" whenever it cannot open the directory, as if
/// it did not exist; but a directory one may search and not read (`drwx-wx-wt`, mode
/// 1733: a drop-box, as spool directories are) cannot be opened `O_RDONLY` by another
/// user, who can still connect to a socket in it. Another user (uid 64001) plants a
/// socket there; this user (uid 64002, a child process) connects with a password, and
/// the check lets it through. On 2bd96ec the planted listener received
/// `p\0\0\0\x16hunter2-review19c\0`, and the child printed `@@refused: remote: failed
/// to connect to the server of …: the connection to the server failed or was lost`
/// (the fake server hung up once it had the password).
#[test]
fn review19c_a_password_is_not_sent_to_a_socket_in_a_directory_this_user_cannot_read() {
    use std::os::unix::fs::PermissionsExt;
    if rustix::process::geteuid().as_raw() != 0 {
        cluster::skipped("review19c unreadable directory: needs root to act as two users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let port = 5997;
    let socket = spool.join(format!(".s.PGSQL.{port}"));
    let rx = unix_listener(&socket);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    rustix::fs::chown(
        &socket,
        Some(rustix::fs::Uid::from_raw(64001)),
        Some(rustix::fs::Gid::from_raw(64001)),
    )
    .unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1733)).unwrap();
    let url = format!(
        "postgres://bot@{}:{port}/db?state=a&password={PASSWORD}&connect_timeout=2",
        spool.display().to_string().replace('/', "%2F")
    );
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "64002", "--regid", "64002", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "review19c::review19c_child_opens_the_url",
            "--nocapture",
            "--include-ignored",
        ])
        .env("STATESAFE_R19C_CHILD_URL", &url)
        .output()
        .unwrap();
    let child = String::from_utf8_lossy(&out.stdout).into_owned();
    let collected = collected(&rx);
    assert!(
        child.contains("@@"),
        "the child (uid 64002) did not run: {child} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        collected.iter().all(|r| !r.contains(PASSWORD)),
        "the socket of uid 64001 in a directory of mode 1733 collected the password of uid 64002: {collected:?}; the child: {child}"
    );
    assert!(child.contains("@@refused: unsafe"), "{child}");
}

/// The child of the test above: opens the store at `$STATESAFE_R19C_CHILD_URL` and
/// prints what became of it.
#[test]
#[ignore = "review19c: the child of a_password_is_not_sent_to_a_socket_in_a_directory_this_user_cannot_read"]
fn review19c_child_opens_the_url() {
    let Ok(url) = std::env::var("STATESAFE_R19C_CHILD_URL") else {
        return;
    };
    match Store::<serde_json::Value>::options().open_url(&url) {
        Ok(_) => println!("@@opened"),
        Err(e) => println!("@@refused: {}: {e}", e.kind()),
    }
}

/// The check looks at each host's directory once, through the path, before the
/// connection; the client library then connects through the path again, host after
/// host. A path another user can change in between (here a symlink of uid 64001's in a
/// sticky shared directory, pointing at a trusted directory when checked) is
/// retargeted while the client is busy with an earlier host of the list (the first
/// host's server accepts, and the link is switched before it hangs up: a
/// deterministic stand-in for any slow first host or a lost race), and the password
/// goes to the other user's socket. On 2bd96ec the planted listener received
/// `p\0\0\0\x16hunter2-review19c\0`.
#[test]
fn review19c_a_password_is_not_sent_through_a_path_changed_after_the_check() {
    use std::os::unix::fs::PermissionsExt;
    if rustix::process::geteuid().as_raw() != 0 {
        cluster::skipped("review19c retargeted link: needs root to chown");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = 5996;
    let [first, trusted, theirs, shared] =
        ["first", "trusted", "theirs", "shared"].map(|d| dir.path().join(d));
    for d in [&first, &trusted, &theirs, &shared] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = shared.join("pg");
    std::os::unix::fs::symlink(&trusted, &link).unwrap();
    rustix::fs::chownat(
        rustix::fs::CWD,
        &link,
        Some(rustix::fs::Uid::from_raw(64001)),
        Some(rustix::fs::Gid::from_raw(64001)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    // The other user's socket, in their own directory.
    let planted = theirs.join(format!(".s.PGSQL.{port}"));
    let rx = unix_listener(&planted);
    for path in [&theirs, &planted] {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(64001)),
            Some(rustix::fs::Gid::from_raw(64001)),
        )
        .unwrap();
    }
    // The first host: accepts, and meanwhile the link is switched; then hangs up.
    let listener =
        std::os::unix::net::UnixListener::bind(first.join(format!(".s.PGSQL.{port}"))).unwrap();
    let (link2, theirs2) = (link.clone(), theirs.clone());
    std::thread::spawn(move || {
        let Ok((conn, _)) = listener.accept() else {
            return;
        };
        shared_swap(&link2, &theirs2);
        drop(conn);
    });
    let url = format!(
        "postgres://bot@{}:{port}/db?state=a&host={}&password={PASSWORD}&connect_timeout=2",
        first.display().to_string().replace('/', "%2F"),
        link.display()
    );
    let opened = Store::<serde_json::Value>::options().open_url(&url);
    let collected = collected(&rx);
    assert!(
        collected.iter().all(|r| !r.contains(PASSWORD)),
        "the socket of uid 64001 (reached through the link switched after the check) collected the password: {collected:?}"
    );
    assert!(opened.is_err(), "opened");
}

/// Points `link` at `target` in one step (a rename over it), as its owner would.
fn shared_swap(link: &std::path::Path, target: &std::path::Path) {
    let new = link.with_extension("new");
    std::os::unix::fs::symlink(target, &new).unwrap();
    std::fs::rename(&new, link).unwrap();
}

/// Debian's and Ubuntu's socket directory, `/var/run/postgresql`, is `drwxrwsr-x
/// postgres postgres` (mode 2775, postgresql-common's tmpfiles.d): group-writable, not
/// sticky. The check refuses any directory others than its owner may write unless it
/// is sticky, so every password-bearing URL to the packaged server's default socket is
/// refused as unsafe, though the refusal's own advice names that directory as the
/// safe place ("keep the server's socket in a directory only its owner can write
/// (Debian's `/var/run/postgresql`)"). A directory of the same owner, group and mode,
/// with the server's socket (the `postgres` account's) in it. On 2bd96ec: kind
/// `unsafe`, "its directory (mode 2775) lets other users replace any file in it".
#[test]
fn review19c_a_password_may_be_sent_to_the_socket_in_debians_socket_directory() {
    use std::os::unix::fs::PermissionsExt;
    if rustix::process::geteuid().as_raw() != 0 {
        cluster::skipped("review19c Debian socket directory: needs root to chown");
        return;
    }
    let Some((uid, gid)) = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres")).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
    else {
        cluster::skipped("review19c Debian socket directory: no `postgres` account");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("postgresql");
    std::fs::create_dir(&run).unwrap();
    let port = 5995;
    let socket = run.join(format!(".s.PGSQL.{port}"));
    let rx = unix_listener(&socket);
    for path in [&run, &socket] {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let url = format!(
        "postgres://bot@{}:{port}/db?state=a&password={PASSWORD}&connect_timeout=2",
        run.display().to_string().replace('/', "%2F")
    );
    let opened = Store::<serde_json::Value>::options().open_url(&url);
    let collected = collected(&rx);
    let Err(err) = opened else {
        panic!("the fake server let a store open")
    };
    assert_ne!(err.kind(), "unsafe", "{err}");
    assert!(
        collected.iter().any(|r| r.contains(PASSWORD)),
        "the server's own socket did not get the password: {collected:?}"
    );
}
