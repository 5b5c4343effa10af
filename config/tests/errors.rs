//! Malformed input: every error names the place (file:line:column) and
//! says what is wrong in a few lowercase words.

mod common;

use common::{error, TempDir};
use junction_config::{parse_file, parse_str, ConfigError};

#[test]
fn missing_values() {
    assert_eq!(error("port:\n"), "1:6: expected a value after 'port'");
    assert_eq!(
        error("port = \nhost = x"),
        "1:8: expected a value after 'port'"
    );
    assert_eq!(error("port"), "1:5: expected a value after 'port'");
    assert_eq!(error("port ="), "1:7: expected a value after 'port'");
    assert_eq!(error("port = ;"), "1:8: expected a value after 'port'");
    assert_eq!(error("m { port: }"), "1:11: expected a value after 'port'");
    assert_eq!(error("m { port }"), "1:10: expected a value after 'port'");
    assert_eq!(error("a = [1]\nb:"), "2:3: expected a value after 'b'");
    // Keys without values, as nats-server rejects them.
    assert_eq!(
        error("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        "1:42: expected a value after 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'"
    );
    assert_eq!(
        error("\n  # comments first\n     aaaa\n   "),
        "4:4: expected a value after 'aaaa'"
    );
    assert_eq!(
        error("\n   a,a,a,a,a,a\n   "),
        "3:4: expected a value after 'a,a,a,a,a,a'"
    );
}

#[test]
fn unterminated_strings() {
    let dangling = "\nlisten: \"localhost:4242\n\nhttp: localhost:8222\n";
    assert_eq!(
        error(dangling),
        "2:9: unterminated string: missing closing '\"'"
    );
    let dangling = "\nlisten: 'localhost:4242\n\nhttp: localhost:8222\n";
    assert_eq!(
        error(dangling),
        "2:9: unterminated string: missing closing \"'\""
    );
    // A string left open by a stray quote swallows the following lines.
    let swallowed = "\nfoo = \"\nlisten: \"\n\nhttp: localhost:8222\n\n\"\n";
    assert_eq!(error(swallowed), "7:1: unterminated quoted key");
    assert_eq!(error("'key"), "1:1: unterminated quoted key");
    assert_eq!(error("m { \"key: 1 }"), "1:5: unterminated quoted key");
}

#[test]
fn unbalanced_braces() {
    let dangling = "\nlisten = 4222\n\ncluster = {\n\n  foo = bar\n\n";
    assert_eq!(
        error(dangling),
        "4:11: unclosed '{': expected '}' before end of file"
    );
    assert_eq!(
        error("a { b { c = 1 }"),
        "1:3: unclosed '{': expected '}' before end of file"
    );
    assert_eq!(
        error("{\n port: 1\n"),
        "1:1: unclosed '{': expected '}' before end of file"
    );
    assert_eq!(
        error("a = 1 }\nb = 2"),
        "1:7: unexpected '}' without a matching '{'"
    );
    assert_eq!(
        error("a = {b = 1}}, c = 2"),
        "1:12: unexpected '}' without a matching '{'"
    );
    assert_eq!(
        error("m { a = 1 ]"),
        "1:11: expected ',' or '}' after the value of 'a', found ']'"
    );
    assert_eq!(error("m { ] }"), "1:5: expected a key, found ']'");
}

#[test]
fn bad_arrays() {
    assert_eq!(
        error("a = [1,,2]"),
        "1:8: expected a value or ']' in array, found ','"
    );
    assert_eq!(
        error("a = [,]"),
        "1:6: expected a value or ']' in array, found ','"
    );
    assert_eq!(
        error("a = [1 2]"),
        "1:8: expected ',' or ']' after an array value, found '2'"
    );
    assert_eq!(
        error("a = [1; 2]"),
        "1:7: expected ',' or ']' after an array value, found ';'"
    );
    assert_eq!(
        error("a = [1, 2"),
        "1:5: unclosed '[': expected ']' before end of file"
    );
    assert_eq!(
        error("a = [\n  1\n  2\n"),
        "1:5: unclosed '[': expected ']' before end of file"
    );
    assert_eq!(
        error("a = [1, }"),
        "1:9: expected a value or ']' in array, found '}'"
    );
    assert_eq!(
        error("a = [\"x\"y]"),
        "1:9: expected ',' or ']' after an array value, found 'y'"
    );
}

#[test]
fn block_strings_must_be_closed() {
    let text = "\nlisten = 4222\n\nquote = (\n\n  foo = bar\n\n";
    assert_eq!(
        error(text),
        "4:9: unterminated block string: expected ')' alone on a line"
    );
    assert_eq!(
        error("b = (x)\n"),
        "1:5: unterminated block string: expected ')' alone on a line"
    );
}

#[test]
fn bad_escapes() {
    assert_eq!(
        error(r"foo = \y"),
        r#"1:7: invalid escape '\y': allowed are \t, \n, \r, \", \\, \xXX and \uXXXX"#
    );
    assert_eq!(
        error(r#"foo = "a\/b""#),
        r#"1:9: invalid escape '\/': allowed are \t, \n, \r, \", \\, \xXX and \uXXXX"#
    );
    assert_eq!(
        error(r#"foo = "[\x]""#),
        r"1:9: expected 2 hexadecimal digits after '\x'"
    );
    assert_eq!(
        error(r#"foo = "[\xe]""#),
        r"1:9: expected 2 hexadecimal digits after '\x'"
    );
    assert_eq!(
        error("foo = xyz\\x\n"),
        r"1:10: expected 2 hexadecimal digits after '\x'"
    );
    assert_eq!(
        error("foo = xyz\\xF\n"),
        r"1:10: expected 2 hexadecimal digits after '\x'"
    );
    assert_eq!(
        error(r#"foo = "\u12""#),
        r"1:8: expected 4 hexadecimal digits after '\u'"
    );
    assert_eq!(
        error(r#"foo = "\ud800""#),
        r"1:8: invalid unicode escape '\ud800'"
    );
    assert_eq!(
        error(r#"foo = "\xe9""#),
        r"1:7: string is not valid utf-8 after applying \x escapes"
    );
    assert_eq!(
        error("foo = \"abc\\"),
        "1:11: incomplete escape sequence at end of file"
    );
}

#[test]
fn bad_numbers() {
    assert_eq!(
        error("foo = .2"),
        "1:7: floats must start with a digit, write '0.2'"
    );
    assert_eq!(
        error("foo = 9223372036854775808"),
        "1:7: integer '9223372036854775808' is out of range"
    );
    assert_eq!(error("foo = 8EB"), "1:7: integer '8EB' is out of range");
    assert_eq!(
        error("foo = 99999999999999999999k"),
        "1:7: integer '99999999999999999999k' is out of range"
    );
    assert_eq!(
        error("foo = 1kbb"),
        "1:7: invalid size suffix 'kbb' in '1kbb', use k, kb, m, mb, g, gb, ..."
    );
    let huge = format!("foo = 1{}.0", "0".repeat(400));
    assert!(error(&huge).ends_with("is out of range"));
}

#[test]
fn bad_keys_and_trailing_text() {
    assert_eq!(error(" :foo = 22"), "1:2: expected a key, found ':'");
    assert_eq!(error("= 1"), "1:1: expected a key, found '='");
    assert_eq!(error("a = 1,, b = 2"), "1:7: expected a key, found ','");
    assert_eq!(
        error("foo = 1 bar"),
        "1:9: expected a new line or ';' after the value of 'foo', found 'b'"
    );
    assert_eq!(
        error("foo = \"x\"y"),
        "1:10: expected a new line or ';' after the value of 'foo', found 'y'"
    );
    assert_eq!(
        error("m { a = 1 b = 2 }"),
        "1:11: expected ',' or '}' after the value of 'a', found 'b'"
    );
}

#[test]
fn nesting_is_limited() {
    let ok = format!("a = {}{}", "[".repeat(128), "]".repeat(128));
    assert!(parse_str(&ok).is_ok());
    let too_deep = format!("a = {}{}", "[".repeat(129), "]".repeat(129));
    assert_eq!(error(&too_deep), "1:133: nesting deeper than 128 levels");
    let maps = "a { ".repeat(200);
    assert!(error(&maps).ends_with("nesting deeper than 128 levels"));
    // Far beyond the limit: an error, not a stack overflow.
    let huge = "[".repeat(1_000_000);
    assert!(error(&format!("a = {huge}")).ends_with("nesting deeper than 128 levels"));
}

#[test]
fn errors_name_the_file() {
    let dir = TempDir::new("errors-name-file");
    let path = dir.write(
        "config.conf",
        "listen: 127.0.0.1:4222\nhttp_port: 8222\nport: \nmax_payload: 1MB\n",
    );
    let err = parse_file(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}:3:7: expected a value after 'port'", path.display())
    );
    let location = err.location().unwrap();
    assert_eq!(location.file.as_deref(), Some(path.as_path()));
    assert_eq!((location.line, location.column), (3, 7));
    assert!(matches!(err, ConfigError::Syntax { .. }));
}

#[test]
fn missing_file() {
    let dir = TempDir::new("errors-missing");
    let path = dir.path().join("nope.conf");
    let err = parse_file(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot read '{}': ", path.display())),
        "{message}"
    );
    assert!(err.location().is_none());
}

#[test]
fn no_infinite_loops_on_odd_input() {
    for text in [
        "A@@Føøøø?˛ø:{øøøø˙˙",
        "include \"9/\u{fffd}",
        "\u{0}",
        "$",
        "a=$",
        "a=\\",
    ] {
        assert!(parse_str(text).is_err(), "{text:?}");
    }
}
