//! bexpr's semantics on the JSON of each endpoint, its error texts, and
//! the parser fuzzed: arbitrary text and token soups never panic and
//! answer either a tree or a pigeon-shaped error; printed trees parse back.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::grammar::{self, parse, Expr, Match, Op, MAX_DEPTH};
use super::*;

fn filter(schema: Schema, src: &str) -> Filter {
    Filter::compile(&parse(src).unwrap(), schema).unwrap()
}

fn compile_error(schema: Schema, src: &str) -> String {
    Filter::compile(&parse(src).unwrap(), schema).unwrap_err()
}

fn web() -> Value {
    json!({"ID": "web-1", "Service": "web", "Tags": ["v1", "primary"],
           "Meta": {"env": "prod", "build id": "2024-07"}, "Port": 8080,
           "Address": "10.0.0.1", "Weights": {"Passing": 1, "Warning": 1},
           "EnableTagOverride": false,
           "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.1", "Port": 8080}}})
}

fn db() -> Value {
    json!({"ID": "db", "Service": "db", "Tags": [], "Meta": {}, "Port": 5432,
           "Address": "", "Weights": {"Passing": 3, "Warning": 1},
           "EnableTagOverride": true})
}

fn passes(src: &str) -> [bool; 2] {
    let f = filter(Schema::Service, src);
    [f.matches(&web()), f.matches(&db())]
}

/// Filters on `/v1/agent/services` elements and what they answer for
/// [`web`] and [`db`].
const SERVICE_CASES: &[(&str, [bool; 2])] = &[
    // Strings: `in` and `contains` are substring tests; `matches` finds.
    ("Service == web", [true, false]),
    ("Service != \"web\"", [false, true]),
    ("\"eb\" in Service", [true, false]),
    ("Service contains e", [true, false]),
    ("Service not contains e", [false, true]),
    ("e not in Service", [false, true]),
    ("ID matches \"^w.b-[0-9]$\"", [true, false]),
    ("ID matches b", [true, true]),
    ("ID not matches \"^d\"", [true, false]),
    ("Address == \"\"", [false, true]),
    // Numbers through Go's ParseInt with base 0 (quoted: an unquoted
    // `0x1f90` is an invalid number literal), bools through ParseBool.
    ("Port == 8080", [true, false]),
    ("Port == \"0x1f90\"", [true, false]),
    ("Port == \"017620\"", [true, false]),
    ("Port != 5432", [true, false]),
    ("Weights.Passing == 3", [false, true]),
    ("EnableTagOverride == true", [false, true]),
    ("EnableTagOverride == F", [true, false]),
    ("TaggedAddresses.lan_ipv4.Port == 8080", [true, false]),
    // Slices: element membership, not substrings.
    ("v1 in Tags", [true, false]),
    ("Tags contains primary", [true, false]),
    ("prim in Tags", [false, false]),
    ("v1 not in Tags", [false, true]),
    ("Tags is empty", [false, true]),
    ("Tags is not empty", [true, false]),
    // Maps: keys by `.k` or `["k"]`, `in` tests a key; a missing key makes
    // ==, in and matches false, the rest true.
    ("Meta.env == prod", [true, false]),
    ("Meta[\"build id\"] matches \"^2024\"", [true, false]),
    ("env in Meta", [true, false]),
    ("env not in Meta", [false, true]),
    ("Meta is empty", [false, true]),
    ("Meta.env != prod", [false, true]),
    ("Meta.env matches \".\"", [true, false]),
    ("Meta.env not matches zzz", [true, true]),
    ("TaggedAddresses.wan.Port != 1", [true, true]),
    // and, or, not, parentheses: not > and > or.
    ("Service == web and Port == 8080", [true, false]),
    ("Service == web and Port == 1", [false, false]),
    ("Service == web or Port == 5432", [true, true]),
    ("not Service == web", [false, true]),
    ("not not Service == web", [true, false]),
    (
        "Service == db or Service == web and Port == 1",
        [false, true],
    ),
    (
        "(Service == db or Service == web) and Port == 8080",
        [true, false],
    ),
    ("not (Service == db or Port == 8080)", [false, false]),
];

#[test]
fn service_semantics() {
    for (src, want) in SERVICE_CASES {
        assert_eq!(passes(src), *want, "{src}");
    }
    assert!(parse("Port == 0x1f90").is_err());
}

#[test]
fn struct_slices_match_when_any_element_does() {
    let entry = |statuses: &[&str]| {
        json!({"Node": {"Node": "n1", "Meta": {"rack": "r1"}},
               "Service": {"Service": "web", "Tags": ["v2"]},
               "Checks": statuses.iter().map(|s| json!({"Status": s})).collect::<Vec<_>>()})
    };
    let f = |src| filter(Schema::ServiceEntry, src);
    let mixed = entry(&["passing", "critical"]);
    let good = entry(&["passing"]);
    let none = entry(&[]);
    let some_not_passing = f("Checks.Status != passing");
    assert!(some_not_passing.matches(&mixed));
    assert!(!some_not_passing.matches(&good));
    assert!(!some_not_passing.matches(&none));
    let no_critical = f("not (Checks.Status == critical)");
    assert!(!no_critical.matches(&mixed) && no_critical.matches(&good));
    assert!(f("Checks is empty").matches(&none));
    assert!(f("Checks is not empty").matches(&good));
    assert!(f("Service.Tags contains \"v2\" and Node.Meta.rack == r1").matches(&good));
    assert!(!f("Node.Meta.rack == r2").matches(&good));
}

#[test]
fn absent_fields_read_as_go_zero_values() {
    let f = filter(
        Schema::Service,
        "Kind == \"\" and Proxy.Mode == \"\" and Connect.Native == false",
    );
    assert!(f.matches(&web()));
    let check = json!({"Definition": {"Interval": "10s", "TTL": "1m30s"}});
    let hc = |src| filter(Schema::HealthCheck, src).matches(&check);
    assert!(hc("Definition.Interval == 10000000000"));
    assert!(hc("Definition.TTL == 90000000000"));
    assert!(hc("Definition.Timeout == 0"));
    assert!(hc("ServiceTags is empty"));
    // A missing map key is empty, and not "not empty".
    assert!(hc("Definition.Header.Accept is empty"));
    assert!(!hc("Definition.Header.Accept is not empty"));
}

#[test]
fn selector_operator_and_value_errors_read_like_bexpr() {
    let s = Schema::ServiceEntry;
    assert_eq!(
        compile_error(s, "Service.Foo == 1"),
        "Selector \"Service.Foo\" is not valid"
    );
    assert_eq!(
        compile_error(s, "Service.Tags.x == 1"),
        "Selector \"Service.Tags.x\" is not valid"
    );
    assert_eq!(
        compile_error(s, "Service.Port matches 1"),
        "Invalid match operator \"Matches\" for selector \"Service.Port\""
    );
    assert_eq!(
        compile_error(s, "Service.Tags == x"),
        "Invalid match operator \"Equal\" for selector \"Service.Tags\""
    );
    assert_eq!(
        compile_error(s, "Service.Service is empty"),
        "Invalid match operator \"Is Empty\" for selector \"Service.Service\""
    );
    assert_eq!(
        compile_error(s, "Service == x"),
        "Invalid match operator \"Equal\" for selector \"Service\""
    );
    assert_eq!(
        compile_error(s, "Service.Port == abc"),
        "Failed to coerce value \"abc\" for selector \"Service.Port\": \
         strconv.ParseInt: parsing \"abc\": invalid syntax"
    );
    assert_eq!(
        compile_error(s, "Service.Port == 99999999999999999999"),
        "Failed to coerce value \"99999999999999999999\" for selector \"Service.Port\": \
         strconv.ParseInt: parsing \"99999999999999999999\": value out of range"
    );
    assert_eq!(
        compile_error(s, "Service.EnableTagOverride != yes"),
        "Failed to coerce value \"yes\" for selector \"Service.EnableTagOverride\": \
         strconv.ParseBool: parsing \"yes\": invalid syntax"
    );
    assert_eq!(
        compile_error(s, "Service.Service matches \"(\""),
        "Failed to compile regular expression \"(\": \
         error parsing regexp: missing closing ): `(`"
    );
    assert_eq!(
        compile_error(s, "Node.Node matches \"a)\""),
        "Failed to compile regular expression \"a)\": error parsing regexp: unexpected ): `a)`"
    );
    assert_eq!(
        compile_error(s, "Node.Node matches \"*\""),
        "Failed to compile regular expression \"*\": \
         error parsing regexp: missing argument to repetition operator: `*`"
    );
    // The first failing match decides, left to right.
    assert_eq!(
        compile_error(s, "Node.Node == a or Nope == 1 or Service.Port == x"),
        "Selector \"Nope\" is not valid"
    );
}

#[test]
fn go_integers() {
    for (s, v) in [
        ("0", 0),
        ("-12", -12),
        ("+7", 7),
        ("0x_1F", 31),
        ("0o17", 15),
        ("0b101", 5),
        ("010", 8),
        ("1_000", 1000),
        ("-9223372036854775808", i64::MIN),
    ] {
        assert_eq!(parse_go_int(s), Ok(v), "{s}");
    }
    for s in [
        "",
        "-",
        "1__0",
        "_1",
        "1_",
        "08",
        "0x",
        "1.5",
        "9223372036854775808",
    ] {
        assert!(parse_go_int(s).is_err(), "{s}");
    }
}

// ---------------------------------------------------------------- fuzzing

/// Either a tree, or an error shaped like pigeon's (`line:col (offset): …`).
fn check_parse(src: &str) {
    match parse(src) {
        Ok(expr) => {
            // A parsed filter prints as text that parses to the same tree.
            let printed = expr.to_string();
            assert_eq!(
                parse(&printed).as_ref(),
                Ok(&expr),
                "{src:?} printed {printed:?}"
            );
            // Checking it against a schema answers, never panics.
            let _ = Filter::compile(&expr, Schema::ServiceEntry).map(|f| f.matches(&web()));
        }
        Err(e) => {
            for line in e.lines() {
                let (pos, rest) = line.split_once(": ").unwrap_or_else(|| panic!("{e}"));
                let (lc, off) = pos.split_once(" (").unwrap_or_else(|| panic!("{e}"));
                let (l, c) = lc.split_once(':').unwrap_or_else(|| panic!("{e}"));
                assert!(l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok(), "{e}");
                let off: usize = off.trim_end_matches(')').parse().unwrap();
                assert!(off <= src.len(), "{e}");
                assert!(
                    rest.starts_with("no match found, expected: ") || rest.starts_with("rule "),
                    "{e}"
                );
            }
        }
    }
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    " ",
    "\n",
    "\t",
    "==",
    "!=",
    "in",
    "not",
    "and",
    "or",
    "is",
    "empty",
    "contains",
    "matches",
    "Service",
    "Tags",
    ".",
    "[",
    "]",
    "\"",
    "`",
    "\"x\"",
    "`y`",
    "\"\\x22\"",
    "\\",
    "1",
    "-",
    "0",
    "0.5",
    "-3",
    "a_b",
    "Meta",
    "[\"k\"]",
    "_",
    "é",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,60}") {
        check_parse(&src);
    }

    #[test]
    fn token_soups_never_panic(toks in proptest::collection::vec(
        proptest::sample::select(TOKENS), 0..24)) {
        check_parse(&toks.concat());
    }

    #[test]
    fn spaced_token_soups_never_panic(toks in proptest::collection::vec(
        proptest::sample::select(TOKENS), 0..24)) {
        check_parse(&toks.join(" "));
    }

    #[test]
    fn printed_trees_parse_back(expr in arb_expr()) {
        let printed = expr.to_string();
        prop_assert_eq!(parse(&printed), Ok(normalise(expr)), "{}", printed);
    }
}

/// What the parser makes of a tree: `not not x` is `x`.
fn normalise(e: Expr) -> Expr {
    match e {
        Expr::Not(inner) => match normalise(*inner) {
            Expr::Not(x) => *x,
            x => Expr::Not(Box::new(x)),
        },
        Expr::Or(t) => Expr::Or(t.into_iter().map(normalise).collect()),
        Expr::And(t) => Expr::And(t.into_iter().map(normalise).collect()),
        m => m,
    }
}

fn arb_ident() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z][a-zA-Z0-9_]{0,6}",
        proptest::sample::select(vec![
            "not", "and", "or", "in", "is", "empty", "contains", "matches"
        ])
        .prop_map(String::from),
    ]
}

fn arb_match() -> impl Strategy<Value = Expr> {
    let op = proptest::sample::select(vec![
        Op::Equal,
        Op::NotEqual,
        Op::In,
        Op::NotIn,
        Op::IsEmpty,
        Op::IsNotEmpty,
        Op::Matches,
        Op::NotMatches,
    ]);
    let part = prop_oneof![arb_ident(), "\\PC{0,5}", "[\"`\\\\ \n]{0,3}"];
    (
        arb_ident(),
        proptest::collection::vec(part, 0..3),
        op,
        "\\PC{0,8}",
    )
        // `not not matches x` is `not (not matches x)`: a selector named
        // `not` cannot be printed with `not matches` unambiguously.
        .prop_filter("ambiguous", |(first, _, op, _)| {
            !(first == "not" && *op == Op::NotMatches)
        })
        .prop_map(|(first, rest, op, value)| {
            let empty = matches!(op, Op::IsEmpty | Op::IsNotEmpty);
            Expr::Match(Match {
                selector: std::iter::once(first).chain(rest).collect(),
                op,
                value: (!empty).then_some(value),
            })
        })
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    arb_match().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

#[test]
fn depth_limit_is_within_the_stack_of_a_request_thread() {
    // Runs on the test thread's stack (2 MiB), as a request does on a
    // worker's: the deepest allowed filter parses, compiles and runs.
    let src = format!(
        "{}Service.Service == web{}",
        "not (".repeat(MAX_DEPTH / 2),
        ")".repeat(MAX_DEPTH / 2)
    );
    let f = filter(Schema::ServiceEntry, &src);
    let _ = f.matches(&json!({"Service": {"Service": "web"}}));
    assert!(grammar::parse(&format!("{}a == 1", "(".repeat(MAX_DEPTH + 1))).is_err());
}
