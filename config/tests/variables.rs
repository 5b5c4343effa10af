//! `$name` references: scoping, environment fallback and errors.

mod common;

use common::{error, parse, parsed};
use junction_config::{parse_str, ConfigError, Value};

/// Sets an environment variable for the rest of the test process. Each test
/// uses its own names, so parallel tests do not interfere.
fn set_env(name: &str, value: &str) {
    std::env::set_var(name, value);
}

#[test]
fn earlier_keys_are_variables() {
    assert_eq!(
        parsed("\n  index = 22\n  foo = $index\n"),
        "{index: 22, foo: 22}"
    );
    assert_eq!(
        parsed("a = 1\nb = $a\nc = [$a, $b]"),
        "{a: 1, b: 1, c: [1, 1]}"
    );
    assert_eq!(
        parsed("users = [{user: a}]\nauth { users = $users }"),
        r#"{users: [{user: "a"}], auth: {users: [{user: "a"}]}}"#
    );
}

#[test]
fn innermost_scope_wins() {
    let text = "
  index = 22
  nest {
    index = 11
    foo = $index
  }
  bar = $index
";
    assert_eq!(
        parsed(text),
        "{index: 22, nest: {index: 11, foo: 11}, bar: 22}"
    );
    let text = "
BAR_USERS = { users = [ {user = \"bar\"} ]}
hello = 'world'
accounts {
  QUUX_USERS = [ { user: quux }]
  bar = $BAR_USERS
  quux = { users = $QUUX_USERS }
}
very { nested { env { VAR = 'NESTED', quux = $VAR }}}
";
    assert_eq!(
        parsed(text),
        r#"{BAR_USERS: {users: [{user: "bar"}]}, hello: "world", accounts: {QUUX_USERS: [{user: "quux"}], bar: {users: [{user: "bar"}]}, quux: {users: [{user: "quux"}]}}, very: {nested: {env: {VAR: "NESTED", quux: "NESTED"}}}}"#
    );
}

#[test]
fn only_earlier_definitions_count() {
    let err = parse_str("a = $later_defined_var_xyz\nlater_defined_var_xyz = 1").unwrap_err();
    assert!(
        matches!(err, ConfigError::UndefinedVariable { ref name, .. } if name == "later_defined_var_xyz")
    );
    // A sibling map's keys are not in scope.
    assert!(error("x { v = 1 }\ny { w = $v }").contains("undefined variable '$v'"));
}

#[test]
fn names_are_case_sensitive() {
    assert_eq!(
        error("port = 1\nb = $PORT_junction_case_test"),
        "2:5: undefined variable '$PORT_junction_case_test'"
    );
}

#[test]
fn undefined_variable_names_it() {
    let err = parse_str("foo = 1\nbar=$junction_missing_variable").unwrap_err();
    assert_eq!(
        err.to_string(),
        "2:5: undefined variable '$junction_missing_variable'"
    );
    match err {
        ConfigError::UndefinedVariable { name, location } => {
            assert_eq!(name, "junction_missing_variable");
            assert_eq!((location.line, location.column), (2, 5));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(error("a = $"), "1:5: undefined variable '$'");
}

#[test]
fn environment_fallback() {
    set_env("JUNCTION_TEST_ENV_INT", "22");
    set_env("JUNCTION_TEST_ENV_STR", "xyz");
    set_env("JUNCTION_TEST_ENV_QUOTED", "'3xyz'");
    set_env("JUNCTION_TEST_ENV_SIZE_LIKE", "3Gyz");
    set_env("JUNCTION_TEST_ENV_SIZE", "2MB");
    set_env("JUNCTION_TEST_ENV_MAP", "{ user: a, pass: b }");
    set_env("JUNCTION_TEST_ENV_LIST", "[1, 2]");
    set_env("JUNCTION_TEST_ENV_EMPTY", "");
    set_env("JUNCTION_TEST_ENV_BOOL", "yes");
    set_env("JUNCTION_TEST_ENV_HOST", "0.0.0.0:4222");
    set_env("JUNCTION_TEST_ENV_NESTED", "$JUNCTION_TEST_ENV_INT");
    let text = "
i = $JUNCTION_TEST_ENV_INT
s = $JUNCTION_TEST_ENV_STR
q = $JUNCTION_TEST_ENV_QUOTED
l = $JUNCTION_TEST_ENV_SIZE_LIKE
z = $JUNCTION_TEST_ENV_SIZE
m = $JUNCTION_TEST_ENV_MAP
a = $JUNCTION_TEST_ENV_LIST
e = $JUNCTION_TEST_ENV_EMPTY
b = $JUNCTION_TEST_ENV_BOOL
h = $JUNCTION_TEST_ENV_HOST
n = $JUNCTION_TEST_ENV_NESTED
";
    assert_eq!(
        parsed(text),
        r#"{i: 22, s: "xyz", q: "3xyz", l: "3Gyz", z: 2097152, m: {user: "a", pass: "b"}, a: [1, 2], e: "", b: true, h: "0.0.0.0:4222", n: 22}"#
    );
}

#[test]
fn file_keys_shadow_the_environment() {
    set_env("JUNCTION_TEST_SHADOWED", "from-env");
    assert_eq!(
        parsed("JUNCTION_TEST_SHADOWED = from-file\nv = $JUNCTION_TEST_SHADOWED"),
        r#"{JUNCTION_TEST_SHADOWED: "from-file", v: "from-file"}"#
    );
}

#[test]
fn bad_environment_values() {
    set_env("JUNCTION_TEST_ENV_SELF", "$JUNCTION_TEST_ENV_SELF");
    assert_eq!(
        error("a = $JUNCTION_TEST_ENV_SELF"),
        "1:5: environment variable 'JUNCTION_TEST_ENV_SELF' does not hold a valid value: \
         1:1: environment variable 'JUNCTION_TEST_ENV_SELF' refers to itself"
    );
    set_env("JUNCTION_TEST_ENV_TWO_WORDS", "foo bar");
    assert_eq!(
        error("a = $JUNCTION_TEST_ENV_TWO_WORDS"),
        "1:5: environment variable 'JUNCTION_TEST_ENV_TWO_WORDS' does not hold a valid value: \
         1:5: unexpected text after the value"
    );
    set_env("JUNCTION_TEST_ENV_OPEN", "[1, 2");
    assert!(error("a = $JUNCTION_TEST_ENV_OPEN").contains("unclosed '['"));
}

#[test]
fn bcrypt_hashes_are_not_variables() {
    assert_eq!(
        parsed("password: $2a$11$ooo"),
        r#"{password: "$2a$11$ooo"}"#
    );
    assert_eq!(
        parsed("password: $2y$10$abc"),
        r#"{password: "$2y$10$abc"}"#
    );
}

#[test]
fn references_keep_the_position_of_their_own_key() {
    let map = parse("v = [1, 2]\n  w = $v\nx = [$v]");
    let w = map.get("w").unwrap();
    assert_eq!((w.line, w.column), (2, 3));
    let x = map.get("x").unwrap().as_array().unwrap();
    assert_eq!((x[0].line, x[0].column), (3, 6));
    // The definition is marked as used, the reference is not.
    assert!(map.get("v").unwrap().used_as_variable);
    assert!(!w.used_as_variable);
}

#[test]
fn variables_marked_used_inside_maps() {
    let map = parse("auth { PASS = x, users = [{password: $PASS}] }\nplain = 1");
    let auth = map.get("auth").unwrap().as_map().unwrap();
    assert!(auth.get("PASS").unwrap().used_as_variable);
    assert!(!auth.get("users").unwrap().used_as_variable);
    assert!(!map.get("plain").unwrap().used_as_variable);
}

#[test]
fn expansion_is_bounded() {
    // Each line doubles the size of the previous one: 2^40 values if it
    // were allowed to expand.
    let mut text = String::from("v0 = [1, 2]\n");
    for i in 1..40 {
        text.push_str(&format!("v{i} = [$v{}, $v{}]\n", i - 1, i - 1));
    }
    assert!(error(&text).ends_with("variables expand to too much data"));

    // Copies cannot get around the nesting limit either.
    let deep = format!("d = {}{}\n", "[".repeat(100), "]".repeat(100));
    let text = format!("{deep}e = {}$d{}", "[".repeat(50), "]".repeat(50));
    assert!(error(&text).ends_with("would nest values deeper than 128 levels"));
}

#[test]
fn copies_are_independent_values() {
    let map = parse("a = {x = 1}\nb = $a");
    assert_eq!(map.get("a").unwrap().value, map.get("b").unwrap().value);
    assert!(matches!(map.get("b").unwrap().value, Value::Map(_)));
}
