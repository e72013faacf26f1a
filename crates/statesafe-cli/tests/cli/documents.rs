//! What any JSON document goes through unchanged: numbers keep their text, deep
//! documents are held (and too deep ones refused on the way in), duplicate keys are
//! refused, the file keeps its layout, and expressions are bounded in time and memory.

use crate::common::Env;
use crate::snap;

/// The number tokens of JSON text, in order (strings skipped).
fn number_tokens(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                tokens.push(text[start..i].to_string());
            }
            _ => i += 1,
        }
    }
    tokens
}

/// Parses as statesafe does: numbers keep their text, no depth limit of 128.
fn value(text: &str) -> serde_json::Value {
    statesafe::json::parse(text.as_bytes()).expect("JSON")
}

#[test]
fn numbers_keep_their_text_through_every_command() {
    let env = Env::new();
    let doc = r#"{"id":18446744073709551616,"big":12345678901234567890123,"e":1e2,"E":1E+2,"z":-0,"f":1.0,"d":0.1,"neg":-12345678901234567890.000000000000000001,"x":0}"#;
    env.state("n.json", doc);
    let steps: [&[&str]; 5] = [
        &["set", "n.json", "/x", "1"],
        &["update", "n.json", "."],
        &["update", "n.json", ".x = 2"],
        &["set", "n.json", "/y", "18446744073709551617"],
        &["update", "n.json", ".x |= . + 1"],
    ];
    for step in steps {
        let run = env.run(step);
        assert_eq!(run.code, 0, "{step:?}: {}", run.snapshot());
        let stored = env.read_string("n.json");
        let got = env.run(&["get", "n.json", "--compact"]);
        for text in [&stored, &got.stdout] {
            let now = value(text);
            for key in ["id", "big", "e", "E", "z", "f", "d", "neg"] {
                assert_eq!(
                    now[key].to_string(),
                    value(doc)[key].to_string(),
                    "{step:?}: {key} in {text}"
                );
            }
        }
    }
    let got = env.run(&["get", "n.json", "/y"]);
    assert_eq!(got.stdout, "18446744073709551617\n");
    assert_eq!(env.run(&["get", "n.json", "/x"]).stdout, "3\n");
    // An exponent keeps its spelling too: marker case and sign as written.
    env.state("e.json", r#"{"a":1e2,"b":1E-7,"c":2E+3,"d":3e+0}"#);
    assert_eq!(
        env.run(&["get", "e.json", "--compact"]).stdout,
        "{\"a\":1e2,\"b\":1E-7,\"c\":2E+3,\"d\":3e+0}\n"
    );
    assert_eq!(env.run(&["set", "e.json", "/x", "1"]).code, 0);
    assert_eq!(env.run(&["update", "e.json", ".y = 4E5"]).code, 0);
    assert_eq!(
        env.run(&["get", "e.json", "--compact"]).stdout,
        "{\"a\":1e2,\"b\":1E-7,\"c\":2E+3,\"d\":3e+0,\"x\":1,\"y\":4E5}\n"
    );
}

#[test]
fn duplicate_keys_are_refused_with_their_place() {
    let env = Env::new();
    env.state("d.json", r#"{"a": 0}"#);
    let run = env
        .cmd()
        .args(["write", "d.json"])
        .write_stdin("{\"a\": 1,\n \"a\": 2}")
        .output()
        .unwrap();
    let run = crate::common::Run::from(run);
    assert_eq!(run.code, 4, "{}", run.snapshot());
    assert_eq!(env.read_string("d.json"), "{\n  \"a\": 0\n}\n");
    snap!("duplicate_key_write", run);
    let run = env.run_unchanged("d.json", &["set", "d.json", "/b", r#"{"x": 1, "x": 1}"#]);
    assert_eq!(run.code, 4, "{}", run.snapshot());
    assert!(run.stderr.contains("duplicate key `x`"), "{}", run.stderr);
    let run = env.run_unchanged(
        "d.json",
        &[
            "update",
            "d.json",
            ".b = $v",
            "--argjson",
            "v",
            r#"{"y": 1, "y": 2}"#,
        ],
    );
    assert_eq!(run.code, 4, "{}", run.snapshot());
    // A file adopted with a repeated key: named, never silently last-wins.
    env.write("adopted.json", "{\"k\": 1,\n\"k\": 2}\n");
    let run = env.run(&["get", "adopted.json"]);
    assert_eq!(run.code, 7, "{}", run.snapshot());
    assert!(
        run.stderr.contains("duplicate key `k`") && run.stderr.contains("line 2"),
        "{}",
        run.stderr
    );
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deep_documents_are_held_and_too_deep_ones_refused_on_the_way_in() {
    let env = Env::new();
    for depth in [200, 512] {
        let doc = format!("{{\"deep\":{},\"n\":1}}", nested(depth - 1));
        let run = env.run_stdin(&["write", "deep.json", "--durability", "none"], &doc);
        assert_eq!(run.code, 0, "{depth}: {}", run.snapshot());
        for step in [
            &["update", "deep.json", ".n += 1"][..],
            &["set", "deep.json", "/m", "2"],
            &["update", "deep.json", "."],
            &["check", "deep.json"],
        ] {
            let run = env.run(step);
            assert_eq!(run.code, 0, "{depth} {step:?}: {}", run.snapshot());
        }
        let got = env.run(&["get", "deep.json", "--compact"]);
        assert_eq!(got.code, 0, "{depth}: {}", got.snapshot());
        assert_eq!(
            got.stdout,
            format!("{{\"deep\":{},\"n\":2,\"m\":2}}\n", nested(depth - 1))
        );
        let run = env.run(&["log", "deep.json"]);
        assert_eq!(run.code, 0, "{depth}: {}", run.snapshot());
        // Nothing was taken for damage.
        assert!(!env.path(".deep.json.statesafe/quarantine").exists());
        assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    }
    // One level more is refused before the file is touched, by every way in.
    let too_deep = nested(513);
    let run = crate::common::Run::from(
        env.cmd()
            .args(["write", "deep.json"])
            .write_stdin(too_deep.clone())
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 4, "{}", run.snapshot());
    assert!(run.stderr.contains("deeper than 512"), "{}", run.stderr);
    let run = env.run_unchanged("deep.json", &["set", "deep.json", "/x", &too_deep]);
    assert_eq!(run.code, 4, "{}", run.snapshot());
    let run = env.run_unchanged(
        "deep.json",
        &["update", "deep.json", "reduce range(513) as $i (1; [.])"],
    );
    assert_eq!(run.code, 4, "{}", run.snapshot());
    assert!(run.stderr.contains("deeper than 512"), "{}", run.stderr);
    // A file made elsewhere that is deeper: refused as too deep, not quarantined.
    env.write("foreign.json", &too_deep);
    let run = env.run(&["get", "foreign.json"]);
    assert_eq!(run.code, 4, "{}", run.snapshot());
    assert!(
        run.stderr.contains("nested 513 levels deep"),
        "{}",
        run.stderr
    );
    assert_eq!(env.read_string("foreign.json"), too_deep);
    assert!(!env.path(".foreign.json.statesafe/quarantine").exists());
}

#[test]
fn runaway_expressions_stop_with_the_lock_released() {
    let env = Env::new();
    env.state("r.json", r#"{"n": 1}"#);
    for expr in [
        "def f: f; f",
        "last(range(1e12))",
        "[limit(100000000; repeat(\"x\"))]",
    ] {
        let run = env.run_unchanged(
            "r.json",
            &["update", "r.json", expr, "--eval-timeout", "500ms"],
        );
        assert_eq!(run.code, 15, "{expr}: {}", run.snapshot());
        assert!(
            run.stderr.contains("did not finish within 500ms"),
            "{}",
            run.stderr
        );
    }
    let run = env.run_unchanged(
        "r.json",
        &["update", "r.json", "def f: f; f", "--eval-timeout", "300ms"],
    );
    snap!("eval_timeout", run);
    // The environment variable sets the default.
    let run = crate::common::Run::from(
        env.cmd()
            .args(["update", "r.json", "def f: f; f"])
            .env("STATESAFE_EVAL_TIMEOUT", "200ms")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 15, "{}", run.snapshot());
    // Runaway recursion: a clear error, never a crash of the process.
    let run = env.run_unchanged(
        "r.json",
        &[
            "update",
            "r.json",
            "def f: 1 + f; f",
            "--eval-timeout",
            "10m",
        ],
    );
    assert_eq!(run.code, 15, "{}", run.snapshot());
    assert!(run.stderr.contains("memory"), "{}", run.stderr);
    // The lock was released: a writer goes through at once.
    let run = env.run(&["set", "r.json", "/n", "2", "--lock-timeout", "0"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    // exec: CMD is killed at the limit.
    let run = env.run_unchanged(
        "r.json",
        &[
            "exec",
            "r.json",
            "--eval-timeout",
            "300ms",
            "--",
            "sleep",
            "30",
        ],
    );
    assert_eq!(run.code, 15, "{}", run.snapshot());
    assert!(run.stderr.contains("was killed"), "{}", run.stderr);
}

#[test]
fn the_file_keeps_its_layout() {
    let env = Env::new();
    let cases = [
        (
            "compact.json",
            "{\"a\":1,\"b\":[1,2]}\n",
            "{\"a\":1,\"b\":[1,2],\"c\":3}\n",
        ),
        (
            "four.json",
            "{\n    \"a\": 1,\n    \"b\": [\n        1\n    ]\n}\n",
            "{\n    \"a\": 1,\n    \"b\": [\n        1\n    ],\n    \"c\": 3\n}\n",
        ),
        (
            "tabs.json",
            "{\n\t\"a\": 1\n}\n",
            "{\n\t\"a\": 1,\n\t\"c\": 3\n}\n",
        ),
        (
            "two.json",
            "{\n  \"a\": 1\n}\n",
            "{\n  \"a\": 1,\n  \"c\": 3\n}\n",
        ),
    ];
    for (name, before, after) in cases {
        env.write(name, before);
        let run = env.run(&["set", name, "/c", "3"]);
        assert_eq!(run.code, 0, "{name}: {}", run.snapshot());
        assert_eq!(env.read_string(name), after, "{name}");
        // And it stays so through later commits.
        let run = env.run(&["update", name, "."]);
        assert_eq!(run.code, 0, "{name}: {}", run.snapshot());
        assert_eq!(env.read_string(name), after, "{name}");
    }
    // A new file, and one that says nothing about its layout: the default.
    let run = env.run(&["set", "new.json", "/a", "1"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.read_string("new.json"), "{\n  \"a\": 1\n}\n");
    env.write("empty.json", "{}");
    assert_eq!(env.run(&["set", "empty.json", "/a", "1"]).code, 0);
    assert_eq!(env.read_string("empty.json"), "{\n  \"a\": 1\n}\n");
}

/// A seeded generator of JSON text: deep nesting, big integers, exponents, `-0`,
/// unicode escapes, long strings.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn digits(&mut self, n: u64) -> String {
        let mut s = (1 + self.below(9)).to_string();
        for _ in 1..n {
            s.push(char::from(b'0' + self.below(10) as u8));
        }
        s
    }

    /// 1 to `max` digits.
    fn some_digits(&mut self, max: u64) -> String {
        let n = 1 + self.below(max);
        self.digits(n)
    }

    fn number(&mut self) -> String {
        let sign = if self.below(3) == 0 { "-" } else { "" };
        match self.below(9) {
            0 => format!("{sign}0"),
            1 => format!("{sign}0.0"),
            2 => format!("{sign}{}", self.some_digits(40)),
            3 => format!("{sign}{}.{}", self.some_digits(20), self.some_digits(30)),
            4 => {
                let marker = ["e", "E", "e+", "E+"][self.below(4) as usize];
                format!("{sign}{}{marker}{}", self.some_digits(5), self.below(400))
            }
            5 => format!(
                "{sign}{}.{}{}-{}",
                self.below(10),
                self.some_digits(8),
                ["e", "E"][self.below(2) as usize],
                self.below(400)
            ),
            6 => "18446744073709551616".into(),
            7 => format!("{sign}{}.0", self.below(1000)),
            _ => format!("{sign}{}", self.below(100_000)),
        }
    }

    fn string(&mut self) -> String {
        let mut s = String::from("\"");
        let len = if self.below(20) == 0 {
            2000 + self.below(5000)
        } else {
            self.below(12)
        };
        for _ in 0..len {
            match self.below(12) {
                0 => s.push_str("\\u00e9"),
                1 => s.push_str("\\ud83d\\ude00"),
                2 => s.push_str("\\\"\\\\\\n\\t"),
                3 => s.push('ü'),
                4 => s.push_str("\\u0000"),
                _ => s.push(char::from(b'a' + self.below(26) as u8)),
            }
        }
        s.push('"');
        s
    }

    fn value(&mut self, depth: u32) -> String {
        let pick = if depth >= 6 {
            self.below(5)
        } else {
            self.below(8)
        };
        match pick {
            0 => "null".into(),
            1 => {
                if self.below(2) == 0 {
                    "true".into()
                } else {
                    "false".into()
                }
            }
            2 | 3 => self.number(),
            4 => self.string(),
            5 => {
                let n = self.below(5);
                let items: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                format!("[{}]", items.join(","))
            }
            6 => {
                let n = self.below(5);
                let items: Vec<String> = (0..n)
                    .map(|i| format!("\"k{i}\":{}", self.value(depth + 1)))
                    .collect();
                format!("{{{}}}", items.join(","))
            }
            _ => {
                // A deep chain.
                let n = 1 + self.below(300) as usize;
                format!("{}{}{}", "[".repeat(n), self.number(), "]".repeat(n))
            }
        }
    }
}

#[test]
fn a_thousand_generated_documents_survive_write_set_update_get() {
    let seed = std::env::var("STATESAFE_CLI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05ee_d0f5_ca1e);
    let mut generator = Gen(seed);
    let env = Env::new();
    // 1,000 documents, 100 to a state file (a process per document would take
    // minutes in a debug build): each is one member, untouched by the commands.
    for batch in 0..10 {
        let docs: Vec<String> = (0..100).map(|_| generator.value(0)).collect();
        let text = format!(
            "{{{}}}",
            docs.iter()
                .enumerate()
                .map(|(i, d)| format!("\"doc{i}\":{d}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let name = format!("batch{batch}.json");
        let run = env.run_stdin(&["write", &name, "--durability", "none"], &text);
        assert_eq!(run.code, 0, "seed {seed:#x}, {name}: {}", run.snapshot());
        for step in [
            &["set", &name, "/unrelated", "1", "--durability", "none"][..],
            &["update", &name, ".", "--durability", "none"],
            &["update", &name, ".unrelated += 1", "--durability", "none"],
        ] {
            let run = env.run(step);
            assert_eq!(run.code, 0, "seed {seed:#x}, {step:?}: {}", run.snapshot());
        }
        let got = env.run(&["get", &name, "--compact"]);
        assert_eq!(got.code, 0, "seed {seed:#x}, {name}: {}", got.snapshot());
        let back = value(&got.stdout);
        let stored = value(&env.read_string(&name));
        assert_eq!(back, stored);
        for (i, doc) in docs.iter().enumerate() {
            let key = format!("doc{i}");
            let expected = value(doc);
            // Equal as values (strings decoded), and every number the same token.
            assert_eq!(back[&key], expected, "seed {seed:#x}, {name} {key}");
            assert_eq!(
                number_tokens(&back[&key].to_string()),
                number_tokens(doc),
                "seed {seed:#x}, {name} {key}"
            );
        }
        assert_eq!(back["unrelated"], value("2"));
    }
}
