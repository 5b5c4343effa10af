//! Every syntax form of the nats-server format, including the behaviours
//! pinned down by nats-server's own lexer and parser tests.

mod common;

use common::{parse, parsed};
use junction_config::Value;

#[test]
fn key_value_separators() {
    for text in [
        "foo = 123",
        "foo=123",
        "foo : 123",
        "foo:123",
        "foo: 123",
        "foo:  123\r\n",
        "foo 123",
        "foo\t123",
        "foo\t\t123\r\n",
        "foo=\t123\t",
        "foo = 123;",
        "foo = 123,",
    ] {
        assert_eq!(parsed(text), "{foo: 123}", "{text:?}");
    }
}

#[test]
fn value_on_the_line_after_a_bare_key() {
    // Without a separator, whitespace (new lines included) may separate
    // the key from its value.
    assert_eq!(parsed("foo\n  bar"), r#"{foo: "bar"}"#);
    // Inside a map, also after a separator.
    assert_eq!(parsed("m {\n  a =\n    1\n}"), "{m: {a: 1}}");
}

#[test]
fn quoted_keys() {
    assert_eq!(parsed("'foo' : 123"), "{foo: 123}");
    assert_eq!(parsed("\"foo\" = 123"), "{foo: 123}");
    assert_eq!(parsed("' foo' : 123"), "{ foo: 123}");
    assert_eq!(parsed("\" foo\" : 123"), "{ foo: 123}");
    assert_eq!(parsed("foo = {'bar' = 4242}"), "{foo: {bar: 4242}}");
    assert_eq!(parsed("foo = {\"bar\" = 4242}"), "{foo: {bar: 4242}}");
    assert_eq!(
        parsed("foo = {'bar-1.2.3' = { port:4242 }}"),
        "{foo: {bar-1.2.3: {port: 4242}}}"
    );
    // A quoted "include" is an ordinary key.
    assert_eq!(parsed("'include' x"), r#"{include: "x"}"#);
}

#[test]
fn entry_terminators() {
    assert_eq!(
        parsed("foo='1'; bar=2.2; baz=true; boo=22"),
        r#"{foo: "1", bar: 2.2, baz: true, boo: 22}"#
    );
    assert_eq!(parsed("a = 1, b = 2,c=3"), "{a: 1, b: 2, c: 3}");
    let semicolons = "
foo = 123;
bar = 'baz';
baz = 'boo'
map {
 id = 1;
}
";
    assert_eq!(
        parsed(semicolons),
        r#"{foo: 123, bar: "baz", baz: "boo", map: {id: 1}}"#
    );
    assert_eq!(
        parsed("m { a = 1; b = 2, c = 3\n d = 4 }"),
        "{m: {a: 1, b: 2, c: 3, d: 4}}"
    );
}

#[test]
fn comments() {
    assert_eq!(parsed("# only a comment"), "{}");
    assert_eq!(parsed("// only a comment\r\n"), "{}");
    assert_eq!(parsed("foo = 123 // trailing"), "{foo: 123}");
    assert_eq!(parsed("foo=123    # trailing"), "{foo: 123}");
    let text = "
# top
foo = {
  ip = '127.0.0.1' # the IP
  port= 4242 // the port
  # own line
}
";
    assert_eq!(parsed(text), r#"{foo: {ip: "127.0.0.1", port: 4242}}"#);
    // A '#' inside a value is part of it.
    assert_eq!(parsed("color = a#b"), r##"{color: "a#b"}"##);
    assert_eq!(
        parsed("s = \"not # a comment\""),
        r##"{s: "not # a comment"}"##
    );
}

#[test]
fn empty_documents() {
    assert_eq!(parsed(""), "{}");
    assert_eq!(parsed("\n\n   \n\t"), "{}");
    assert_eq!(parsed("\n  # just comments\n  // and more\n"), "{}");
    assert_eq!(parsed("\u{feff}port: 1"), "{port: 1}");
}

#[test]
fn double_quoted_strings() {
    assert_eq!(parsed(r#"foo = "bar""#), r#"{foo: "bar"}"#);
    assert_eq!(parsed(r#"foo = """#), r#"{foo: ""}"#);
    assert_eq!(
        parsed(r#"s = "tab\tnl\ncr\rquote\"bs\\""#),
        r#"{s: "tab\tnl\ncr\rquote\"bs\\"}"#
    );
    assert_eq!(parsed(r#"foo = "\\end""#), r#"{foo: "\\end"}"#);
    assert_eq!(parsed(r#"foo = "start\\""#), r#"{foo: "start\\"}"#);
    assert_eq!(parsed(r#"foo = "\x45\x71""#), r#"{foo: "Eq"}"#);
    assert_eq!(
        parsed(r#"foo = "caf\u00e9 \xc3\xa9""#),
        r#"{foo: "café é"}"#
    );
    assert_eq!(parsed(r#"foo = "true""#), r#"{foo: "true"}"#);
    assert_eq!(parsed(r#"foo = "$var""#), r#"{foo: "$var"}"#);
    assert_eq!(parsed(r#"foo = "42""#), r#"{foo: "42"}"#);
    // Strings may span lines.
    assert_eq!(parsed("foo = \"a\nb\""), r#"{foo: "a\nb"}"#);
}

#[test]
fn single_quoted_strings_are_raw() {
    assert_eq!(parsed("foo = 'bar'"), r#"{foo: "bar"}"#);
    assert_eq!(parsed("foo = ''"), r#"{foo: ""}"#);
    assert_eq!(parsed(r"foo = 'bar\r\n  \t'"), r#"{foo: "bar\\r\\n  \\t"}"#);
    let text = "
foo  {
  expr = '(true == \"false\")'
  text = 'This is a multi-line
text block.'
}
";
    assert_eq!(
        parsed(text),
        r#"{foo: {expr: "(true == \"false\")", text: "This is a multi-line\ntext block."}}"#
    );
}

#[test]
fn unquoted_strings() {
    let text = "
foo = 123
bar = baz
baz=boo
map {
 id:one
 id2 : onetwo
}
t true
f false
tstr \"true\"
tkey = two
fkey = five # a comment
";
    assert_eq!(
        parsed(text),
        r#"{foo: 123, bar: "baz", baz: "boo", map: {id: "one", id2: "onetwo"}, t: true, f: false, tstr: "true", tkey: "two", fkey: "five"}"#
    );
    // Anything that is not exactly a number stays a string.
    for (text, expected) in [
        ("foo = 3xyz", "3xyz"),
        ("foo = 1Ghz", "1Ghz"),
        ("foo = 2Pie", "2Pie"),
        ("foo = 3Mbs,", "3Mbs"),
        ("foo = 5Gø", "5Gø"),
        ("foo = 1.5k", "1.5k"),
        ("foo = 1e5", "1e5"),
        ("foo = 2016-05-04T18:53:41Z", "2016-05-04T18:53:41Z"),
        ("foo = +1", "+1"),
        ("foo = -", "-"),
        ("foo = -x", "-x"),
        ("path = ./data/js", "./data/js"),
        ("path = /var/lib/nats", "/var/lib/nats"),
        ("url = nats://user:pw@host:4222", "nats://user:pw@host:4222"),
        ("subject = orders.>", "orders.>"),
        ("subject = orders.*.new", "orders.*.new"),
    ] {
        assert_eq!(
            parse(text)
                .get(text.split(' ').next().unwrap())
                .unwrap()
                .value,
            Value::String(expected.to_string()),
            "{text:?}"
        );
    }
    // A single quote ends an unquoted string and is dropped.
    assert_eq!(parsed("foo = bar' "), r#"{foo: "bar"}"#);
    // Values end at ',', ';', ']' and '}' as well as whitespace.
    assert_eq!(parsed("m {a: x}"), r#"{m: {a: "x"}}"#);
    assert_eq!(parsed("a = [x,y]"), r#"{a: ["x", "y"]}"#);
}

#[test]
fn unquoted_strings_process_escapes() {
    let text = r#"
foo  = \t
bar  = \r
baz  = \n
q    = \"
bs   = \\
"#;
    assert_eq!(
        parsed(text),
        r#"{foo: "\t", bar: "\r", baz: "\n", q: "\"", bs: "\\"}"#
    );
    assert_eq!(parsed(r"foo = \x65"), r#"{foo: "e"}"#);
    assert_eq!(parsed(r"foo = \x45\x71"), r#"{foo: "Eq"}"#);
    assert_eq!(parsed(r"foo = start\x45\x71"), r#"{foo: "startEq"}"#);
    assert_eq!(parsed(r"foo = start\x7Cend"), r#"{foo: "start|end"}"#);
    assert_eq!(parsed(r"foo = \x3c\x3eend"), r#"{foo: "<>end"}"#);
    assert_eq!(parsed(r"foo = \x3cmiddle\x3E"), r#"{foo: "<middle>"}"#);
    // An escaped value is never a boolean, variable or number.
    assert_eq!(parsed(r"foo = \\true"), r#"{foo: "\\true"}"#);
    assert_eq!(parsed(r"foo = \\$var"), r#"{foo: "\\$var"}"#);
    assert_eq!(parsed(r"foo = 4\x32"), r#"{foo: "42"}"#);
}

#[test]
fn hosts_and_addresses_stay_strings() {
    for (text, expected) in [
        ("listen: 127.0.0.1:4222", "127.0.0.1:4222"),
        ("listen: 127.0.0.1", "127.0.0.1"),
        ("listen: 0.0.0.0", "0.0.0.0"),
        ("listen: apcera.me:80", "apcera.me:80"),
        ("listen: nats.io:-1", "nats.io:-1"),
        ("listen: :-1", ":-1"),
        ("listen = :80", ":80"),
    ] {
        assert_eq!(
            parse(text).get("listen").unwrap().value,
            Value::String(expected.to_string()),
            "{text:?}"
        );
    }
    assert_eq!(parsed("listen: -1"), "{listen: -1}");
    assert_eq!(
        parsed("listen = [localhost:4222, localhost:4333]"),
        r#"{listen: ["localhost:4222", "localhost:4333"]}"#
    );
}

#[test]
fn integers_and_floats() {
    assert_eq!(parsed("foo = 123"), "{foo: 123}");
    assert_eq!(parsed("foo = -123"), "{foo: -123}");
    assert_eq!(parsed("foo=-123\r\n"), "{foo: -123}");
    assert_eq!(parsed("foo = 0"), "{foo: 0}");
    assert_eq!(parsed("foo = 007"), "{foo: 7}");
    assert_eq!(parsed("foo = 22.2"), "{foo: 22.2}");
    assert_eq!(parsed("foo=22.2\r\n"), "{foo: 22.2}");
    assert_eq!(parsed("foo = -0.5"), "{foo: -0.5}");
    assert_eq!(
        parsed("max = 9223372036854775807"),
        "{max: 9223372036854775807}"
    );
    assert_eq!(
        parsed("min = -9223372036854775808"),
        "{min: -9223372036854775808}"
    );
}

#[test]
fn size_suffixes() {
    let text = "
k = 8k
kb = 4kb
ki = 3ki
kib = 4KiB
m = 1m
mb = 2MB
mi = 2Mi
mib = 64MiB
g = 2g
gb = 22GB
gi = 22Gi
gib = 22GiB
t = 3T
tb = 22TB
ti = 22Ti
tib = 22TiB
p = 1p
pb = 22PB
pi = 22Pi
pib = 22PiB
e = 2e
eb = 7EB
upper = 1K
neg = -1m
neggb = -1GB
";
    let map = parse(text);
    let expect = [
        ("k", 8 * 1000),
        ("kb", 4 * 1024),
        ("ki", 3 * 1024),
        ("kib", 4 * 1024),
        ("m", 1_000_000),
        ("mb", 2 << 20),
        ("mi", 2 << 20),
        ("mib", 64 << 20),
        ("g", 2_000_000_000),
        ("gb", 22 << 30),
        ("gi", 22 << 30),
        ("gib", 22 << 30),
        ("t", 3_000_000_000_000),
        ("tb", 22 << 40),
        ("ti", 22 << 40),
        ("tib", 22 << 40),
        ("p", 1_000_000_000_000_000),
        ("pb", 22 << 50),
        ("pi", 22 << 50),
        ("pib", 22 << 50),
        ("e", 2_000_000_000_000_000_000),
        ("eb", 7 << 60),
        ("upper", 1000),
        ("neg", -1_000_000),
        ("neggb", -(1 << 30)),
    ];
    for (key, value) in expect {
        assert_eq!(map.get(key).unwrap().as_i64(), Some(value), "{key}");
    }
    assert_eq!(map.len(), expect.len());
    // Sizes work wherever values do.
    assert_eq!(parsed("a = [1k, 2MB]"), "{a: [1000, 2097152]}");
    assert_eq!(parsed("m {x: 1k}"), "{m: {x: 1000}}");
}

#[test]
fn booleans() {
    for word in ["true", "TRUE", "True", "yes", "YES", "on", "On"] {
        assert_eq!(parsed(&format!("foo={word}")), "{foo: true}", "{word}");
    }
    for word in ["false", "FALSE", "False", "no", "No", "off", "OFF"] {
        assert_eq!(parsed(&format!("foo = {word}")), "{foo: false}", "{word}");
    }
    assert_eq!(parsed("foo = 'yes'"), r#"{foo: "yes"}"#);
    assert_eq!(parsed("foo = truely"), r#"{foo: "truely"}"#);
}

#[test]
fn arrays() {
    assert_eq!(
        parsed("foo = [1, 2, 3, 'bar']"),
        r#"{foo: [1, 2, 3, "bar"]}"#
    );
    assert_eq!(parsed("foo = [1,2,3,'bar']"), r#"{foo: [1, 2, 3, "bar"]}"#);
    assert_eq!(parsed("foo = [1, 2,3,'bar']"), r#"{foo: [1, 2, 3, "bar"]}"#);
    assert_eq!(parsed("foo = []"), "{foo: []}");
    assert_eq!(parsed("foo = [ ]"), "{foo: []}");
    assert_eq!(parsed("foo = [1]"), "{foo: [1]}");
    assert_eq!(parsed("foo = [1,]"), "{foo: [1]}");
    assert_eq!(
        parsed("foo [true, 2.5, [x, []]]"),
        r#"{foo: [true, 2.5, ["x", []]]}"#
    );
    let with_comments = "
# top level comment
foo = [
 1, # One
 2, // Two
 3 # Three
 'bar'     ,
 \"bar\"
]
";
    assert_eq!(parsed(with_comments), r#"{foo: [1, 2, 3, "bar", "bar"]}"#);
    let no_separators = "
foo = [
 1 // foo
 2
 3
 'bar'
 \"bar\"
]
";
    assert_eq!(parsed(no_separators), r#"{foo: [1, 2, 3, "bar", "bar"]}"#);
}

#[test]
fn maps() {
    let nested = "
foo = {
  host = {
    ip = '127.0.0.1'
    port= 4242
  }
}
";
    assert_eq!(
        parsed(nested),
        r#"{foo: {host: {ip: "127.0.0.1", port: 4242}}}"#
    );
    let whitespace = "
foo  {
  host  {
    ip = '127.0.0.1'
    port= 4242
  }
}
";
    assert_eq!(
        parsed(whitespace),
        r#"{foo: {host: {ip: "127.0.0.1", port: 4242}}}"#
    );
    assert_eq!(
        parsed("foo = {ip='127.0.0.1', port = 4242}"),
        r#"{foo: {ip: "127.0.0.1", port: 4242}}"#
    );
    assert_eq!(parsed("foo {}"), "{foo: {}}");
    assert_eq!(parsed("foo {a: 1,}"), "{foo: {a: 1}}");
    assert_eq!(
        parsed("systems {\n  allinone {\n    description: \"This is a description.\"\n  }\n}\n"),
        r#"{systems: {allinone: {description: "This is a description."}}}"#
    );
    assert_eq!(parsed("map {\n  foo = 3xyz}\n"), r#"{map: {foo: "3xyz"}}"#);
    assert_eq!(
        parsed("map {\n  foo = 3xyz,\n  bar = 4wqs\n}\n"),
        r#"{map: {foo: "3xyz", bar: "4wqs"}}"#
    );
}

#[test]
fn arrays_of_maps() {
    let text = "
authorization {
    users = [
      {user: alice, password: foo}
      {user: bob,   password: bar}
    ]
    timeout: 0.5
}
";
    assert_eq!(
        parsed(text),
        r#"{authorization: {users: [{user: "alice", password: "foo"}, {user: "bob", password: "bar"}], timeout: 0.5}}"#
    );
    let text = "
  array [
    { abc: 123 }
    { xyz: \"word\" }
  ]
";
    assert_eq!(parsed(text), r#"{array: [{abc: 123}, {xyz: "word"}]}"#);
}

#[test]
fn documented_samples() {
    let sample1 = "
foo  {
  host {
    ip   = '127.0.0.1'
    port = 4242
  }
  servers = [ \"a.com\", \"b.com\", \"c.com\"]
}
";
    assert_eq!(
        parsed(sample1),
        r#"{foo: {host: {ip: "127.0.0.1", port: 4242}, servers: ["a.com", "b.com", "c.com"]}}"#
    );
    let cluster = "
cluster {
  port: 4244

  authorization {
    user: route_user
    password: top_secret
    timeout: 1
  }

  # Routes are actively solicited.
  // Both comment styles.

  routes = [
    nats-route://foo:bar@apcera.me:4245
    nats-route://foo:bar@apcera.me:4246
  ]
}
";
    assert_eq!(
        parsed(cluster),
        r#"{cluster: {port: 4244, authorization: {user: "route_user", password: "top_secret", timeout: 1}, routes: ["nats-route://foo:bar@apcera.me:4245", "nats-route://foo:bar@apcera.me:4246"]}}"#
    );
    assert_eq!(
        parsed("\n  now = 2016-05-04T18:53:41Z\n  gmt = false\n\n"),
        r#"{now: "2016-05-04T18:53:41Z", gmt: false}"#
    );
}

#[test]
fn block_strings() {
    assert_eq!(
        parsed("\nnumbers (\n1234567890\n)\n"),
        r#"{numbers: "\n1234567890\n"}"#
    );
    // At the end of the text, without a final new line.
    assert_eq!(
        parsed("numbers (\n1234567890\n)"),
        r#"{numbers: "\n1234567890\n"}"#
    );
    // Only a ')' alone at the start of a line ends the block.
    assert_eq!(
        parsed("\nnumbers (\n  12(34)56\n  (\n    7890\n  )\n)\n"),
        r#"{numbers: "\n  12(34)56\n  (\n    7890\n  )\n"}"#
    );
    assert_eq!(
        parsed("b = (\r\nx\r\n)\r\nc = 1"),
        r#"{b: "\r\nx\r\n", c: 1}"#
    );
    assert_eq!(
        parsed("m { b (\nx\n)\n c: 1 }"),
        r#"{m: {b: "\nx\n", c: 1}}"#
    );
}

#[test]
fn top_level_braces_like_json() {
    let expected = r#"{http_port: 8227, port: 4227, write_deadline: "1h", cluster: {port: 6222, routes: ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]}}"#;
    let pretty = std::fs::read_to_string(common::fixtures().join("json.conf")).unwrap();
    assert_eq!(parsed(&pretty), expected);
    let ugly = r#"{"http_port": 8227,"port": 4227,"write_deadline": "1h","cluster": {"port": 6222,"routes": ["nats://127.0.0.1:4222","nats://127.0.0.1:4223","nats://127.0.0.1:4224"]}}"#;
    assert_eq!(parsed(ugly), expected);

    assert_eq!(
        parsed("{\"http_port\": 8224,\"port\": 4224}\n"),
        "{http_port: 8224, port: 4224}"
    );
    assert_eq!(
        parsed("{\"http_port\": 8225,\"port\": 4225\n}\n"),
        "{http_port: 8225, port: 4225}"
    );
    assert_eq!(
        parsed(
            "{\n  \"jetstream\": {\n    \"store_dir\": \"/tmp/nats\"\n    \"max_mem\": 1000000,\n  },\n  \"port\": 4222,\n  \"server_name\": \"nats1\"\n}\n"
        ),
        r#"{jetstream: {store_dir: "/tmp/nats", max_mem: 1000000}, port: 4222, server_name: "nats1"}"#
    );
    assert_eq!(parsed("{}"), "{}");
    assert_eq!(parsed("\n{\n}\n"), "{}");
    assert_eq!(parsed("{\n# comments in the body\n}\n"), "{}");
    assert_eq!(
        parsed("{ listen: 0.0.0.0:4222 }"),
        r#"{listen: "0.0.0.0:4222"}"#
    );
    assert_eq!(
        parsed("\n{\n  {\n    listen: 0.0.0.0:4222 // comment\n  }\n  # wibble1\n}\n# wibble2\n"),
        r#"{listen: "0.0.0.0:4222"}"#
    );
    assert_eq!(
        parsed("{\n  \"debug\":  False\n  \"prof_port\": 8221\n  \"server_name\": \"aws-1\"\n}"),
        r#"{debug: false, prof_port: 8221, server_name: "aws-1"}"#
    );
    // nats-server tolerates stray closing braces at the end of a file.
    assert_eq!(
        parsed("\naccounts { users = [{}]}\n}\n"),
        "{accounts: {users: [{}]}}"
    );
    assert_eq!(
        parsed("{\n  accounts { users = [{}]}\n}\n"),
        "{accounts: {users: [{}]}}"
    );
    assert_eq!(parsed("a = 1\n} } // done\n}"), "{a: 1}");
}

#[test]
fn duplicate_keys_last_wins() {
    let map = parse("a = 1\nb = 2\na = 3\n");
    assert_eq!(common::render(&map), "{b: 2, a: 3}");
    let a = map.get("a").unwrap();
    assert_eq!((a.line, a.column), (3, 1));
}

#[test]
fn lookup_ignores_case() {
    let map = parse("Port: 4222\nMax_Payload: 1MB\nAuthorization { USER: me }");
    assert_eq!(map.get("port").and_then(|i| i.as_i64()), Some(4222));
    assert_eq!(
        map.get("MAX_PAYLOAD").and_then(|i| i.as_i64()),
        Some(1 << 20)
    );
    let auth = map.get("authorization").and_then(|i| i.as_map()).unwrap();
    assert_eq!(auth.get("user").and_then(|i| i.as_str()), Some("me"));
    assert!(map.get_exact("port").is_none());
    let keys: Vec<&str> = map.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["Port", "Max_Payload", "Authorization"]);
}

#[test]
fn positions_of_keys_and_elements() {
    let text =
        "\nport: 4222\n  cluster {\n\tname: c1\n    routes = [\n      a,   b\n    ]\n  }\néé = 1\n";
    let map = parse(text);
    let at = |item: &junction_config::Item| (item.line, item.column);
    assert_eq!(at(map.get("port").unwrap()), (2, 1));
    let cluster = map.get("cluster").unwrap();
    assert_eq!(at(cluster), (3, 3));
    let cluster = cluster.as_map().unwrap();
    assert_eq!(at(cluster.get("name").unwrap()), (4, 2));
    let routes = cluster.get("routes").unwrap();
    assert_eq!(at(routes), (5, 5));
    let routes = routes.as_array().unwrap();
    assert_eq!(at(&routes[0]), (6, 7));
    assert_eq!(at(&routes[1]), (6, 12));
    // Columns count characters, not bytes.
    assert_eq!(at(map.get("éé").unwrap()), (9, 1));
    let text = "a = 1; b = 2\nm { x: 1, 'y': 2 }";
    let map = parse(text);
    assert_eq!(at(map.get("b").unwrap()), (1, 8));
    let m = map.get("m").unwrap().as_map().unwrap();
    assert_eq!(at(m.get("x").unwrap()), (2, 5));
    assert_eq!(at(m.get("y").unwrap()), (2, 11));
    // Strings parsed from text carry no file.
    assert!(map.get("a").unwrap().file.is_none());
}

#[test]
fn durations_are_strings_with_a_helper() {
    let map = parse("ping_interval: \"2m\"\nwrite_deadline: 10s\nauth_timeout: 3\nhalf: 0.5");
    assert_eq!(
        map.get("ping_interval").unwrap().value,
        Value::String("2m".into())
    );
    let secs = |key: &str| map.get(key).unwrap().as_duration().unwrap().as_secs_f64();
    assert_eq!(secs("ping_interval"), 120.0);
    assert_eq!(secs("write_deadline"), 10.0);
    assert_eq!(secs("auth_timeout"), 3.0);
    assert_eq!(secs("half"), 0.5);
    assert_eq!(
        junction_config::parse_duration("1h30m").unwrap(),
        std::time::Duration::from_secs(5400)
    );
}

#[test]
fn accessors() {
    let map = parse("s = x\ni = 2\nf = 1.5\nb = on\na = [1]\nm {}");
    let get = |k: &str| &map.get(k).unwrap().value;
    assert_eq!(get("s").as_str(), Some("x"));
    assert_eq!(get("i").as_i64(), Some(2));
    assert_eq!(get("i").as_f64(), Some(2.0));
    assert_eq!(get("f").as_f64(), Some(1.5));
    assert_eq!(get("b").as_bool(), Some(true));
    assert_eq!(get("a").as_array().map(<[_]>::len), Some(1));
    assert!(get("m").as_map().unwrap().is_empty());
    assert_eq!(get("s").as_i64(), None);
    let names: Vec<_> = ["s", "i", "f", "b", "a", "m"]
        .iter()
        .map(|k| get(k).type_name())
        .collect();
    assert_eq!(
        names,
        ["string", "integer", "float", "boolean", "array", "map"]
    );
}
