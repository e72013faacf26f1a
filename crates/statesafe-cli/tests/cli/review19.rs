//! Review, session 19 (review19pg noticed it with `copy --replace` between a file and a
//! server; the same holds between files, tested here).

use crate::common::Env;

/// `copy --replace` promises that the destination's own versions stay in its history,
/// but it recorded the source's retention on the destination: a source keeping 2
/// history entries and 1 backup pruned the destination's six earlier generations
/// during the copy itself (the destination's history held only generations 8 and 9
/// after the next commit, its settings `keep: 2` and `keep: 1`). The retention
/// recorded on an existing destination is now the larger of the two, field by field
/// (and the counts raised by the versions copied, `review19c.rs`).
#[test]
fn copy_replace_keeps_the_destinations_own_versions_and_retention() {
    let env = Env::new();
    assert_eq!(env.run(&["init", "dst.json", "{\"n\": 0}"]).code, 0);
    for n in 1..=5 {
        assert_eq!(env.run(&["set", "dst.json", "/n", &n.to_string()]).code, 0);
    }
    assert_eq!(
        env.run(&["init", "src.json", "{\"from\": \"src\"}"]).code,
        0
    );
    let run = env.run(&[
        "settings",
        "src.json",
        "--keep-history",
        "2",
        "--keep-backups",
        "1",
    ]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.run(&["set", "src.json", "/a", "1"]).code, 0);
    let run = env.run(&["copy", "src.json", "dst.json", "--replace"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.run(&["set", "dst.json", "/x", "1"]).code, 0);
    assert_eq!(
        crate::review19c::log_generations(&env, "dst.json"),
        (1..=9).collect::<Vec<u64>>(),
        "the destination's history after the copy and one commit"
    );
    let run = env.run(&["--json", "settings", "dst.json"]);
    let settings = &run.json()["settings"];
    // The larger of the two (the destination's defaults, 1000 and 5), raised by the
    // two versions copied (review19c: a full history lost its own versions otherwise).
    assert_eq!(settings["history"]["keep"], 1002, "{settings}");
    assert_eq!(settings["backups"]["keep"], 7, "{settings}");
}
