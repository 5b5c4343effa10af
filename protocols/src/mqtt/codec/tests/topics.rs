use super::*;

// Topic mapping. The expected subjects below are nats-server's own test tables
// (server/mqtt_test.go: TestMQTTTopicAndSubjectConversion, TestMQTTFilterConversion,
// TestMQTTTopicWithDot), checked against the rules of its server/mqtt.go
// (mqttToNATSSubjectConversion, natsSubjectToMQTTTopic, mqttNeedSubForLevelUp).

#[test]
fn topic_names_map_to_subjects_and_back_as_nats_server_does() {
    let table = [
        ("/", "/./"),
        ("//", "/././"),
        ("///", "/./././"),
        ("////", "/././././"),
        ("foo", "foo"),
        ("/foo", "/.foo"),
        ("//foo", "/./.foo"),
        ("///foo", "/././.foo"),
        ("///foo/", "/././.foo./"),
        ("///foo//", "/././.foo././"),
        ("///foo///", "/././.foo./././"),
        ("//.foo.//", "/././/foo//././"),
        ("foo/bar", "foo.bar"),
        ("/foo/bar", "/.foo.bar"),
        ("/foo/bar/", "/.foo.bar./"),
        ("foo/bar/baz", "foo.bar.baz"),
        ("/foo/bar/baz", "/.foo.bar.baz"),
        ("/foo/bar/baz/", "/.foo.bar.baz./"),
        ("bar/", "bar./"),
        ("bar//", "bar././"),
        ("bar///", "bar./././"),
        ("foo//bar", "foo./.bar"),
        ("foo///bar", "foo././.bar"),
        ("foo////bar", "foo./././.bar"),
        (".", "//"),
        ("..", "////"),
        ("...", "//////"),
        ("./", "//./"),
        (".//.", "//././/"),
        ("././.", "//.//.//"),
        ("././/.", "//.//././/"),
        (".foo", "//foo"),
        ("foo.", "foo//"),
        (".foo.", "//foo//"),
        ("foo../bar/", "foo////.bar./"),
        ("foo../bar/.", "foo////.bar.//"),
        ("/foo/", "/.foo./"),
        ("./foo/.", "//.foo.//"),
        ("foo.bar/baz", "foo//bar.baz"),
        ("spBv1.0/plant1", "spBv1//0.plant1"),
        ("a.b/c", "a//b.c"),
    ];
    for (topic, subject) in table {
        let t = Bytes::from_static(topic.as_bytes());
        let got = topic_to_subject(&t).unwrap();
        assert_eq!(&got[..], subject.as_bytes(), "{topic:?}");
        let back = subject_to_topic(&got).unwrap();
        assert_eq!(back, topic, "{subject:?} back");
    }
    // Unchanged topics are not copied.
    let t = Bytes::from_static(b"plain");
    assert_eq!(topic_to_subject(&t).unwrap().as_ptr(), t.as_ptr());
    let errors = [
        ("foo/+", TopicError::Wildcard),
        ("foo/#", TopicError::Wildcard),
        ("foo bar", TopicError::UnsupportedCharacter),
        ("foo\tbar", TopicError::UnsupportedCharacter),
        ("foo\x7fbar", TopicError::UnsupportedCharacter),
    ];
    for (topic, err) in errors {
        let t = Bytes::from_static(topic.as_bytes());
        assert_eq!(topic_to_subject(&t), Err(err), "{topic:?}");
    }
}

#[test]
fn filters_map_to_subjects_as_nats_server_does() {
    let table: [(&str, &str, Option<&str>); 30] = [
        ("+", "*", None),
        ("/+", "/.*", None),
        ("+/", "*./", None),
        ("/+/", "/.*./", None),
        ("foo/+", "foo.*", None),
        ("foo/+/", "foo.*./", None),
        ("foo/+/bar", "foo.*.bar", None),
        ("foo/+/+", "foo.*.*", None),
        ("foo/+/+/", "foo.*.*./", None),
        ("foo/+/+/bar", "foo.*.*.bar", None),
        ("foo//+", "foo./.*", None),
        ("foo//+/", "foo./.*./", None),
        ("foo//+//", "foo./.*././", None),
        ("foo//+//bar", "foo./.*./.bar", None),
        ("foo///+///bar", "foo././.*././.bar", None),
        ("foo.bar///+///baz", "foo//bar././.*././.baz", None),
        // `a/#` also matches `a`: the parent subject.
        ("#", ">", None),
        ("/#", "/.>", Some("/")),
        ("/foo/#", "/.foo.>", Some("/.foo")),
        ("foo/#", "foo.>", Some("foo")),
        ("foo//#", "foo./.>", Some("foo./")),
        ("foo///#", "foo././.>", Some("foo././")),
        ("foo/bar/#", "foo.bar.>", Some("foo.bar")),
        ("foo/bar.baz/#", "foo.bar//baz.>", Some("foo.bar//baz")),
        // NATS wildcards are not escaped.
        ("foo*/bar", "foo*.bar", None),
        ("foo>/bar", "foo>.bar", None),
        ("foo/*/bar", "foo.*.bar", None),
        ("foo/*/bar/*", "foo.*.bar.*", None),
        ("foo/>", "foo.>", Some("foo")),
        ("foo/*/bar/>", "foo.*.bar.>", Some("foo.*.bar")),
    ];
    for (filter, subject, parent) in table {
        let f = Bytes::from_static(filter.as_bytes());
        let got = filter_to_subjects(&f).unwrap();
        assert_eq!(&got.subject[..], subject.as_bytes(), "{filter:?}");
        assert_eq!(
            got.parent.as_deref(),
            parent.map(str::as_bytes),
            "{filter:?} parent"
        );
    }
    // The parent of `foo//#` is the subject of the topic `foo/`.
    let parent = filter_to_subjects(&Bytes::from_static(b"foo//#"))
        .unwrap()
        .parent
        .unwrap();
    assert_eq!(
        parent,
        topic_to_subject(&Bytes::from_static(b"foo/")).unwrap()
    );
}

#[test]
fn nats_subjects_map_to_topics() {
    let table = [
        ("foo.bar", "foo/bar"),
        ("spBv1//0.plant1", "spBv1.0/plant1"),
        ("plain", "plain"),
        ("a/b", "ab"), // a lone `/` escapes nothing and is dropped, as by nats-server
        ("a.", "a/"),
    ];
    for (subject, topic) in table {
        let got = subject_to_topic(&Bytes::from_static(subject.as_bytes())).unwrap();
        assert_eq!(got, topic, "{subject:?}");
    }
    assert_eq!(
        subject_to_topic(&Bytes::from_static(b"a.\xff")),
        Err(TopicError::NotAString)
    );
}

#[test]
fn topic_filter_rules() {
    let valid = [
        "#",
        "+",
        "a",
        "a/b",
        "a/#",
        "+/+",
        "/",
        "//",
        "a/+/c",
        "+/#",
        "$share/g/a",
        "a b",
    ];
    let invalid = [
        "", "a#", "a/#/b", "#/a", "a+", "+a/b", "a/b+/c", "##", "a/++",
    ];
    for f in valid {
        assert!(is_valid_topic_filter(f.as_bytes()), "{f:?}");
    }
    for f in invalid {
        assert!(!is_valid_topic_filter(f.as_bytes()), "{f:?}");
    }
    assert_eq!(
        shared_subscription(b"$share/g/a/+"),
        Some((&b"g"[..], &b"a/+"[..]))
    );
    for f in [
        "$share/g",
        "$share//a",
        "$share/g+/a",
        "$share/g/",
        "$share/g/a#",
        "a/b",
    ] {
        assert_eq!(shared_subscription(f.as_bytes()), None, "{f:?}");
    }
    assert!(is_valid_topic_name(b"a/b c"));
    assert!(!is_valid_topic_name(b"a/+"));
}
