//! The paths that keep large documents cheap (issue #12, item 7): `update` reads the
//! file straight into jq's values and writes from them, `get FILE POINTER` picks the
//! value out while parsing. They must keep everything the general path keeps:
//! numbers' text, key order, the refusal of duplicate keys and of too-deep
//! documents, and the handling of damaged files. (Their memory and time are
//! measured in the bench, not here.)

use serde_json::Value;

use crate::common::Env;

/// Numbers in every form JSON allows, written back digit for digit by an update
/// that does not touch them.
const NUMBERS: &str = r#"{"big":18446744073709551616123,"neg":-12345678901234567890123,"d":1.50,"z":-0,"zf":-0.0,"e":1e+400,"E":2E5,"e2":3e2,"small":-1.5e-7,"f":1.0,"long":123456789.123456789123456789,"n":1}"#;

#[test]
fn update_keeps_every_number_exactly() {
    let env = Env::new();
    // A compact file written by another program: adopted, and kept compact (item
    // 6), so the bytes can be compared whole.
    env.write("s.json", format!("{NUMBERS}\n"));
    let run = env.run(&["update", "s.json", ".n = 2"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let expected = NUMBERS.replace(r#""n":1}"#, r#""n":2}"#);
    assert_eq!(env.read_string("s.json"), format!("{expected}\n"));
    // Computing with a number changes that number only.
    let run = env.run(&["update", "s.json", ".d += 1"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let out: Value = serde_json::from_str(&env.read_string("s.json")).unwrap();
    assert_eq!(out["d"].to_string(), "2.5");
    assert_eq!(out["big"].to_string(), "18446744073709551616123");
    assert_eq!(out["z"].to_string(), "-0");
    // Big integers stay exact through arithmetic.
    let run = env.run(&["update", "s.json", ".big += 1"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let out: Value = serde_json::from_str(&env.read_string("s.json")).unwrap();
    assert_eq!(out["big"].to_string(), "18446744073709551616124");
}

#[test]
fn get_pointer_keeps_every_number_exactly() {
    let env = Env::new();
    env.state("s.json", NUMBERS);
    let whole: Value = serde_json::from_str(NUMBERS).unwrap();
    for (key, value) in whole.as_object().unwrap() {
        let run = env.run(&["get", "s.json", &format!("/{key}"), "--compact"]);
        assert_eq!(run.code, 0, "{}", run.snapshot());
        assert_eq!(run.stdout, format!("{value}\n"), "/{key}");
    }
}

#[test]
fn update_keeps_key_order() {
    let env = Env::new();
    env.write(
        "s.json",
        "{\"z\":1,\"a\":{\"y\":1,\"b\":2,\"x\":3},\"m\":[{\"k\":1,\"c\":2,\"j\":3}],\"b\":0}\n",
    );
    let run = env.run(&[
        "update",
        "s.json",
        "del(.a.b) | del(.m[0].c) | .q = 1 | .a.w = 4",
    ]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(
        env.read_string("s.json"),
        "{\"z\":1,\"a\":{\"y\":1,\"x\":3,\"w\":4},\"m\":[{\"k\":1,\"j\":3}],\"b\":0,\"q\":1}\n"
    );
}

#[test]
fn duplicate_keys_are_refused_by_update_and_get() {
    let env = Env::new();
    // A file statesafe never wrote, as another program might leave it.
    env.write("d.json", "{\"a\": 1, \"b\": {\"x\": 1, \"x\": 2}}\n");
    for pointer in ["/a", "/b/x", ""] {
        let run = env.run_unchanged("d.json", &["get", "d.json", pointer]);
        assert!(
            run.stderr.contains("duplicate key `x`"),
            "{}",
            run.snapshot()
        );
    }
    // Read-only commands left no sidecar behind (item 2).
    assert!(!env.path(".d.json.statesafe").exists());
    let run = env.run_unchanged("d.json", &["update", "d.json", ".n = 1"]);
    assert!(
        run.stderr.contains("duplicate key `x`"),
        "{}",
        run.snapshot()
    );
    // An expression cannot produce one either: a key set twice is one key.
    env.state("s.json", "{}");
    let run = env.run(&["update", "s.json", ".x = 1 | .x = 2"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.read_string("s.json"), "{\n  \"x\": 2\n}\n");
}

/// Every pointer gives what the whole document's value at that pointer is, and
/// every kind of miss the same error as before.
#[test]
fn get_pointer_matches_the_whole_document() {
    let env = Env::new();
    let doc = r#"{"items":[{"id":0,"tags":["a","b"]},{"id":1,"tags":[]}],"n":7,"s":"x","t":null,"a/b":{"~":true},"":{"":1}}"#;
    env.state("s.json", doc);
    let whole: Value = serde_json::from_str(doc).unwrap();
    for pointer in [
        "/items",
        "/items/1",
        "/items/0/tags/1",
        "/items/1/tags",
        "/a~1b/~0",
        "/",
        "//",
        "/n",
        "/t",
    ] {
        let run = env.run(&["get", "s.json", pointer, "--compact"]);
        assert_eq!(run.code, 0, "{pointer}: {}", run.snapshot());
        let expected = whole.pointer(pointer).unwrap();
        assert_eq!(run.stdout, format!("{expected}\n"), "{pointer}");
    }
    for (pointer, kind) in [
        ("/items/2", "no_value"),
        ("/items/-", "no_value"),
        ("/items/0/tags/9/x", "no_value"),
        ("/missing/deeper", "no_value"),
        ("/items/x", "pointer_through_non_object"),
        ("/items/01", "pointer_through_non_object"),
        ("/n/x", "pointer_through_non_object"),
        ("/s/0", "pointer_through_non_object"),
        ("/t/0", "pointer_through_non_object"),
    ] {
        let run = env.run(&["--json", "get", "s.json", pointer]);
        assert_ne!(run.code, 0, "{pointer}");
        let err: Value = serde_json::from_str(run.stderr.lines().last().unwrap()).unwrap();
        assert_eq!(err["kind"], kind, "{pointer}: {}", run.snapshot());
    }
    let run = env.run(&["get", "s.json", "/items/0/tags/9/x"]);
    assert!(
        run.stderr
            .contains("cannot read `/items/0/tags/9/x` in `s.json`: no value at `/items/0/tags/9`"),
        "{}",
        run.snapshot()
    );
}

/// A damaged file is refused or recovered by `get FILE POINTER` exactly as by
/// `get FILE`: the pointer's fast path never serves unverified bytes.
#[test]
fn damaged_files_are_refused_by_get_pointer() {
    // A file statesafe never wrote that is not JSON: reported, never quarantined.
    let env = Env::new();
    env.write("bad.json", "{\"a\": 1, \"b\": [1, 2\n");
    let pointed = env.run_unchanged("bad.json", &["get", "bad.json", "/a"]);
    let whole = env.run_unchanged("bad.json", &["get", "bad.json"]);
    assert_eq!(pointed.code, whole.code);
    assert_eq!(pointed.stderr, whole.stderr);
    assert!(!env.path(".bad.json.statesafe").exists());

    // A state file cut short after its last commit: recovered, loudly (the backup
    // of generation 1 and the history's patch rebuild generation 2), and the value
    // served is the recovered one, never one read from the damaged bytes.
    let env = Env::new();
    env.state("s.json", r#"{"a":1,"b":[1,2]}"#);
    env.state("s.json", r#"{"a":2,"b":[3,4]}"#);
    let committed = env.read_string("s.json");
    let cut = committed.find('3').unwrap();
    env.write("s.json", &committed[..cut]);
    let run = env.run(&["get", "s.json", "/a"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(run.stdout, "2\n");
    assert!(
        run.stderr.contains("restored generation 2"),
        "{}",
        run.snapshot()
    );
    assert!(env.path(".s.json.statesafe/quarantine").exists());
    assert_eq!(env.read_string("s.json"), committed);

    // A sealed file with one byte changed (still valid JSON): the seal does not
    // verify, so the value is not served from it.
    let env = Env::new();
    let run = env.run(&[
        "init",
        "s.json",
        r#"{"a":"x","b":1}"#,
        "--format",
        "sealed",
        "--durability",
        "none",
    ]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let sealed = env.read_string("s.json");
    assert!(sealed.contains("\"x\""), "{sealed}");
    env.write("s.json", sealed.replace("\"x\"", "\"y\""));
    let run = env.run(&["get", "s.json", "/a"]);
    assert_ne!(run.stdout, "\"y\"\n", "{}", run.snapshot());
    assert!(run.stderr.contains("checksum"), "{}", run.snapshot());
}

/// Nesting at statesafe's limit works through both paths; one level more is
/// refused as before.
#[test]
fn deep_documents() {
    const DEPTH: usize = 512;
    let env = Env::new();
    let deep = format!("{}1{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    env.state("s.json", &deep);
    let run = env.run(&["update", "s.json", "."]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let pointer = "/0".repeat(DEPTH);
    let run = env.run(&["get", "s.json", &pointer]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(run.stdout, "1\n");
    let run = env.run(&["get", "s.json", &"/0".repeat(DEPTH - 1), "--compact"]);
    assert_eq!(run.stdout, "[1]\n");
    let run = env.run(&["get", "s.json", &format!("{pointer}/0")]);
    assert!(
        run.stderr.contains("is a number, not an object or array"),
        "{}",
        run.snapshot()
    );
    let run = env.run_unchanged("s.json", &["update", "s.json", "[.]"]);
    assert!(
        run.stderr.contains("nested deeper than 512 levels"),
        "{}",
        run.snapshot()
    );
    // A file one level deeper, written by another program, is refused by both.
    env.write("deeper.json", format!("[{deep}]"));
    let run = env.run_unchanged("deeper.json", &["update", "deeper.json", "."]);
    assert!(run.stderr.contains("512"), "{}", run.snapshot());
    let run = env.run_unchanged("deeper.json", &["get", "deeper.json", "/0"]);
    assert!(run.stderr.contains("512"), "{}", run.snapshot());
}

/// `update` on a document with many records changes what the expression changes
/// and nothing else: the rest of the file is the same bytes.
#[test]
fn update_of_a_larger_document_changes_one_value() {
    let env = Env::new();
    let items: Vec<String> = (0..20_000)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"item-{i:06}","value":{}.25,"ok":{}}}"#,
                i * 3,
                i % 2 == 0
            )
        })
        .collect();
    let doc = format!(r#"{{"n":1000000000000,"items":[{}]}}"#, items.join(","));
    env.write("s.json", format!("{doc}\n"));
    let run = env.run(&["update", "s.json", ".n += 1"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let expected = doc.replace("\"n\":1000000000000,", "\"n\":1000000000001,");
    // (Not assert_eq: a failure would print 1 MB twice.)
    assert!(
        env.read_string("s.json") == format!("{expected}\n"),
        "the rest of the document changed"
    );
    let run = env.run(&["get", "s.json", "/items/19999/value"]);
    assert_eq!(run.stdout, "59997.25\n");
    // The history recorded the change as a patch.
    let run = env.run(&["diff", "s.json", "1"]);
    assert_eq!(
        run.stdout,
        "{\"op\":\"replace\",\"path\":\"/n\",\"value\":1000000000001}\n",
        "{}",
        run.snapshot()
    );
    // Again, now on a version statesafe committed (past 1 MiB: read from the file
    // and written into the new one without the text in memory, stream.rs).
    assert!(expected.len() > 1 << 20);
    let run = env.run(&["update", "s.json", ".n += 1"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let expected = doc.replace("\"n\":1000000000000,", "\"n\":1000000000002,");
    assert!(
        env.read_string("s.json") == format!("{expected}\n"),
        "the rest of the document changed"
    );
    let run = env.run(&["diff", "s.json", "2"]);
    assert_eq!(
        run.stdout,
        "{\"op\":\"replace\",\"path\":\"/n\",\"value\":1000000000002}\n",
        "{}",
        run.snapshot()
    );
    let run = env.run(&["check", "s.json"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
}
