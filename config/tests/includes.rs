//! `include` directives: path resolution, merging, scoping and errors.

mod common;

use std::path::Path;

use common::{fixtures, render, TempDir};
use junction_config::{parse_file, parse_str, ConfigError};

const ALICE: &str = "$2a$11$Qm9ndXNIYXNoRm9yQWxpY2VPbmx5Rm9yVGVzdGluZ1B1cnBvc2VzWlo";
const BOB: &str = "$2a$11$Qm9ndXNIYXNoRm9yQm9iT25seUZvclRlc3RpbmdQdXJwb3Nlc1paWlo";

#[test]
fn nested_includes_resolve_relative_to_the_including_file() {
    // simple.conf includes includes/users.conf, which includes
    // ./passwords.conf from its own directory and uses its keys.
    let map = parse_file(&fixtures().join("simple.conf")).unwrap();
    assert_eq!(
        render(&map),
        format!(
            r#"{{listen: "127.0.0.1:4222", authorization: {{ALICE_PASS: "{ALICE}", BOB_PASS: "{BOB}", users: [{{user: "alice", password: "{ALICE}"}}, {{user: "bob", password: "{BOB}"}}], timeout: 0.5}}}}"#
        )
    );

    // Items remember the file and position where they were defined.
    let auth = map.get("authorization").unwrap().as_map().unwrap();
    let alice = auth.get("ALICE_PASS").unwrap();
    assert_eq!((alice.line, alice.column), (2, 1));
    assert!(alice
        .file
        .as_deref()
        .unwrap()
        .ends_with("includes/passwords.conf"));
    assert!(alice.used_as_variable);
    let users = auth.get("users").unwrap();
    assert_eq!((users.line, users.column), (5, 1));
    assert!(users
        .file
        .as_deref()
        .unwrap()
        .ends_with("includes/users.conf"));
    let timeout = auth.get("timeout").unwrap();
    assert_eq!((timeout.line, timeout.column), (6, 3));
    assert!(timeout.file.as_deref().unwrap().ends_with("simple.conf"));
}

#[test]
fn parse_str_resolves_includes_against_the_current_directory() {
    // Cargo runs integration tests from the package root.
    let map = parse_str("auth { include 'tests/fixtures/includes/passwords.conf' }").unwrap();
    let auth = map.get("auth").unwrap().as_map().unwrap();
    assert_eq!(auth.get("ALICE_PASS").unwrap().as_str(), Some(ALICE));
}

#[test]
fn include_forms() {
    let dir = TempDir::new("include-forms");
    dir.write("a.conf", "a = 1");
    dir.write("sub dir/b.conf", "b = 2");
    dir.write("c.conf", "c = 3");
    dir.write("d.conf", "d = 4");
    let main = dir.write(
        "main.conf",
        "include a.conf\nINCLUDE \"sub dir/b.conf\"\ninclude 'c.conf'; m { include d.conf }\n\
         n {include a.conf}\no { include \"c.conf\", x = 1 }\n",
    );
    assert_eq!(
        render(&parse_file(&main).unwrap()),
        "{a: 1, b: 2, c: 3, m: {d: 4}, n: {a: 1}, o: {c: 3, x: 1}}"
    );
}

#[test]
fn absolute_include_paths() {
    let dir = TempDir::new("include-absolute");
    let inner = dir.write("inner.conf", "port: 4222");
    let text = format!("include \"{}\"", inner.display());
    assert_eq!(render(&parse_str(&text).unwrap()), "{port: 4222}");
}

#[test]
fn later_definitions_override() {
    let dir = TempDir::new("include-override");
    dir.write("defaults.conf", "port: 4222\nhost: 0.0.0.0\n");
    let main = dir.write(
        "main.conf",
        "port: 1\ninclude defaults.conf\nhost: 127.0.0.1\n",
    );
    assert_eq!(
        render(&parse_file(&main).unwrap()),
        r#"{port: 4222, host: "127.0.0.1"}"#
    );
}

#[test]
fn included_files_do_not_see_the_including_scope() {
    let dir = TempDir::new("include-scope");
    dir.write("inner.conf", "b = $junction_include_scope_a");
    let main = dir.write(
        "main.conf",
        "junction_include_scope_a = 1\ninclude inner.conf\n",
    );
    let err = parse_file(&main).unwrap_err();
    let ConfigError::Include { error, path, .. } = &err else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(path, Path::new("inner.conf"));
    assert!(matches!(**error, ConfigError::UndefinedVariable { .. }));
}

#[test]
fn json_includes() {
    let dir = TempDir::new("include-json");
    dir.write("foo.json", r#"{ "users": [ {"user": "foo"} ] }"#);
    dir.write("bar.json", "{\n  \"users\": [ {\"user\": \"bar\"} ]\n}");
    dir.write("quux.json", "{}");
    let main = dir.write(
        "main.conf",
        "accounts {\n  foo  { include 'foo.json'  }\n  bar  { include 'bar.json'  }\n  quux { include 'quux.json' }\n}\n",
    );
    assert_eq!(
        render(&parse_file(&main).unwrap()),
        r#"{accounts: {foo: {users: [{user: "foo"}]}, bar: {users: [{user: "bar"}]}, quux: {}}}"#
    );
}

#[test]
fn empty_and_comment_only_includes_are_fine() {
    let dir = TempDir::new("include-empty");
    dir.write("empty.conf", "");
    dir.write("comments.conf", "\n  # just some comments\n");
    let main = dir.write(
        "main.conf",
        "a { include empty.conf }\nb { include comments.conf }\n",
    );
    assert_eq!(render(&parse_file(&main).unwrap()), "{a: {}, b: {}}");
}

#[test]
fn errors_inside_included_files_show_both_places() {
    let dir = TempDir::new("include-errors");
    let bad = dir.write("bar.conf", "AAAAAAAAAA");
    let main = dir.write(
        "main.conf",
        "# includes\naccounts {\n  foo { include 'foo.conf'}\n  bar { include 'bar.conf'}\n}\n",
    );
    dir.write("foo.conf", "");
    let err = parse_file(&main).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4:9: cannot include 'bar.conf': {}:1:11: expected a value after 'AAAAAAAAAA'",
            main.display(),
            bad.display()
        )
    );
    let location = err.location().unwrap();
    assert_eq!((location.line, location.column), (4, 9));
}

#[test]
fn missing_include() {
    let dir = TempDir::new("include-missing");
    let main = dir.write("main.conf", "port: 1\n  include nothere.conf\n");
    let err = parse_file(&main).unwrap_err();
    let message = err.to_string();
    let expected_start = format!(
        "{}:2:3: cannot include 'nothere.conf': cannot read '{}': ",
        main.display(),
        dir.path().join("nothere.conf").display()
    );
    assert!(message.starts_with(&expected_start), "{message}");
    let ConfigError::Include { error, .. } = err else {
        panic!()
    };
    assert!(matches!(*error, ConfigError::Io { .. }));
}

#[test]
fn only_regular_files_are_included() {
    let dir = TempDir::new("include-dir");
    dir.write("sub/x.conf", "");
    let main = dir.write("main.conf", "include sub\n");
    assert!(parse_file(&main)
        .unwrap_err()
        .to_string()
        .contains("not a regular file"));
    if Path::new("/dev/zero").exists() {
        assert!(parse_str("include /dev/zero")
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
    }
}

#[test]
fn include_cycles_are_errors() {
    let dir = TempDir::new("include-cycle");
    dir.write("a.conf", "a = 1\ninclude b.conf\n");
    dir.write("b.conf", "b = 1\ninclude ./a.conf\n");
    let main = dir.write("main.conf", "include a.conf\n");
    let message = parse_file(&main).unwrap_err().to_string();
    assert!(
        message.contains("include cycle: './a.conf' is already being parsed"),
        "{message}"
    );
    let selfish = dir.write("self.conf", "x = 1\ninclude self.conf");
    let message = parse_file(&selfish).unwrap_err().to_string();
    assert!(
        message.ends_with("2:1: include cycle: 'self.conf' is already being parsed"),
        "{message}"
    );
}

#[test]
fn malformed_include_directives() {
    assert_eq!(
        parse_str("include\nfoo").unwrap_err().to_string(),
        "1:8: expected a file name after 'include'"
    );
    assert_eq!(
        parse_str("include [a]").unwrap_err().to_string(),
        "1:9: expected a file name after 'include', found '['"
    );
    assert_eq!(
        parse_str("include \"a.conf").unwrap_err().to_string(),
        "1:9: unterminated include file name"
    );
    assert_eq!(
        parse_str("include ''").unwrap_err().to_string(),
        "1:9: empty file name after 'include'"
    );
    // "include" followed by a separator is an ordinary key.
    assert_eq!(render(&parse_str("include: 1").unwrap()), "{include: 1}");
    assert_eq!(render(&parse_str("include=1").unwrap()), "{include: 1}");
}

#[test]
fn long_include_chains_hit_the_nesting_limit() {
    let dir = TempDir::new("include-chain");
    for i in 0..100 {
        dir.write(
            &format!("f{i}.conf"),
            &format!("x {{ include f{}.conf }}", i + 1),
        );
    }
    dir.write("f100.conf", "end = 1");
    let message = parse_file(&dir.path().join("f0.conf"))
        .unwrap_err()
        .to_string();
    assert!(message.ends_with("deeper than 128 levels"), "{message}");

    // A shorter chain is fine.
    let short = TempDir::new("include-chain-short");
    for i in 0..10 {
        short.write(
            &format!("f{i}.conf"),
            &format!("x {{ include f{}.conf }}", i + 1),
        );
    }
    short.write("f10.conf", "end = 1");
    let map = parse_file(&short.path().join("f0.conf")).unwrap();
    assert_eq!(
        render(&map),
        format!("{}{{end: 1}}{}", "{x: ".repeat(10), "}".repeat(10))
    );
}
