//! Many processes incrementing one counter through `statesafe update`.

use crate::common::Env;

/// 4 processes x 200 `statesafe update counter.json '.n += 1'` end at exactly 800:
/// the writers' lock serialises the read-modify-write of separate processes.
/// (`--durability none`: this tests locking, not fsync, and keeps the test quick.)
#[test]
fn four_processes_times_200_updates() {
    let env = Env::new();
    assert_eq!(env.run(&["init", "counter.json", "{\"n\": 0}"]).code, 0);
    let bin = crate::common::bin();
    let script = format!(
        "i=0; while [ $i -lt 200 ]; do {bin} update counter.json '.n += 1' --durability none --lock-timeout 60s || exit 1; i=$((i+1)); done"
    );
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new("sh")
                .current_dir(env.dir())
                .args(["-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(env.run(&["get", "counter.json", "/n"]).stdout, "800\n");
}
