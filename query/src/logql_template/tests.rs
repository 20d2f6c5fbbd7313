//! Templates end to end: parse, render against an entry, compare with what
//! Go's text/template and Loki's functions print.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// 2023-01-15T16:08:09.902Z, the entry time the tests render with.
const TS: i64 = 1_673_798_889_902_000_000;
/// 2024-02-29T12:00:00Z, the query's "now".
const NOW: i64 = 1_709_208_000_000_000_000;

fn labels() -> BTreeMap<String, String> {
    [
        ("app", "checkout"),
        ("path", "/api/v1/orders"),
        ("method", "GET"),
        ("status", "503"),
        ("latency", "1.5s"),
        ("size", "2 KiB"),
        ("cluster", "eu-west-cluster"),
        ("err", "ErrTimeout while dialing"),
        ("empty", ""),
        ("n", "7"),
        (
            "queries",
            r#"[{"query":"up","step":15},{"query":"rate(x[5m])","step":30}]"#,
        ),
        ("b64", "aGVsbG8"),
        ("from", "1679577215"),
        ("padded", "  hi  "),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn render(src: &str) -> Result<String, TemplateError> {
    let labels = labels();
    let template = Template::parse(src)?;
    template.render(&TemplateContext::new(
        &labels,
        "level=error msg=\"boom\" XYZ XYZ",
        TS,
        NOW,
    ))
}

#[track_caller]
fn ok(src: &str, want: &str) {
    match render(src) {
        Ok(got) => assert_eq!(got, want, "template: {src}"),
        Err(e) => panic!("template {src} failed: {e}"),
    }
}

#[track_caller]
fn fails(src: &str, want: &str) {
    match render(src) {
        Ok(got) => panic!("template {src} rendered {got:?}, want error {want:?}"),
        Err(e) => assert_eq!(e.to_string(), want, "template: {src}"),
    }
}

#[test]
fn text_fields_and_missing_labels() {
    ok("plain text", "plain text");
    ok("{{.app}} {{ .path }}", "checkout /api/v1/orders");
    ok("[{{.nope}}]", "[]");
    ok("{{ $.method }}", "GET");
    // A missing label is the empty string, so a field of it fails as Go's does.
    fails(
        "{{ .nope.deeper }}",
        "template: line:1:3: executing \"line\" at <.nope.deeper>: can't evaluate field deeper in type string",
    );
    fails(
        "{{ .app.deeper }}",
        "template: line:1:3: executing \"line\" at <.app.deeper>: can't evaluate field deeper in type string",
    );
}

#[test]
fn trim_markers_and_comments() {
    ok("a  {{- .app -}}  b", "acheckoutb");
    ok("a \n{{- /* note */ -}}\n b", "ab");
    ok("x{{/* c */}}y", "xy");
    ok("{{-3}}", "-3");
    ok("{{ 3 -}} 4", "34");
    fails(
        "{{ /* c */ }}",
        "template: line:1: unexpected \"/\" in command"
            .replace(
                "unexpected \"/\" in command",
                "unrecognized character in action: U+002F '/'",
            )
            .as_str(),
    );
    fails(
        "{{/* c */ 1 }}",
        "template: line:1: comment ends before closing delimiter",
    );
    fails("{{/* c ", "template: line:1: unclosed comment");
}

#[test]
fn literals_print_like_go() {
    ok(r#"{{ "a\tb\u00e9" }}"#, "a\tb\u{e9}");
    ok("{{ `raw\\n` }}", "raw\\n");
    ok(
        "{{ 42 }} {{ 0x10 }} {{ 1.50 }} {{ 1e6 }} {{ 'a' }} {{ true }}",
        "42 16 1.5 1e+06 97 true",
    );
    ok("{{ -0.5 }}", "-0.5");
    fails(
        "{{ nil }}",
        "template: line:1:3: executing \"line\" at <nil>: nil is not a command",
    );
    fails("{{ 3x }}", "template: line:1: bad number syntax: \"3x\"");
    fails("{{ \"abc }}", "template: line:1: unterminated quoted string");
}

#[test]
fn pipelines_and_calls() {
    ok("{{ .method | ToLower }}", "get");
    ok("{{ .path | replace \"/\" \"_\" | trunc 7 | upper }}", "_API_V1");
    ok("{{ upper (lower .method) }}", "GET");
    ok("{{ printf \"%s-%s\" .app (.method | lower) }}", "checkout-get");
    fails(
        "{{ .app | 3 }}",
        "template: line:1: non executable command in pipeline stage 2",
    );
    fails(
        "{{ 3 4 }}",
        "template: line:1:3: executing \"line\" at <3>: can't give argument to non-function 3",
    );
    fails("{{ foo }}", "template: line:1: function \"foo\" not defined");
    fails(
        "{{ upper }}",
        "template: line:1:3: executing \"line\" at <upper>: wrong number of args for upper: want 1 got 0",
    );
    fails("{{ }}", "template: line:1: missing value for command");
    fails("{{ .app | }}", "template: line:1: missing value for command");
    fails("{{ .app", "template: line:1: unclosed action");
    fails("{{ (upper .app }}", "template: line:1: unclosed left paren");
}

#[test]
fn variables() {
    ok("{{ $x := .app }}{{ $x }}", "checkout");
    ok("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2");
    ok("{{ with $x := .method }}{{ $x }}{{ end }}", "GET");
    fails("{{ $y }}", "template: line:1: undefined variable \"$y\"");
    fails("{{ $y = 1 }}", "template: line:1: undefined variable \"$y\"");
    fails(
        "{{ if true }}{{ $z := 1 }}{{ end }}{{ $z }}",
        "template: line:1: undefined variable \"$z\"",
    );
}

#[test]
fn control_structures() {
    ok("{{ if .app }}yes{{ end }}", "yes");
    ok("{{ if .empty }}yes{{ else }}no{{ end }}", "no");
    ok(
        "{{ if .nope }}a{{ else if eq .method \"GET\" }}b{{ else }}c{{ end }}",
        "b",
    );
    ok(
        "{{ if contains \"ErrTimeout\" .err }} timeout {{else if contains \"he\" \"hello\"}} yes {{else}} no {{end}}",
        " timeout ",
    );
    ok(
        "{{ if and (contains \"he\" \"hello\") (contains \"llo\" \"hello\") }} yes {{end}}",
        " yes ",
    );
    ok("{{ with .method }}{{ . }}{{ else }}none{{ end }}", "GET");
    ok(
        "{{ with .empty }}{{ . }}{{ else with .app }}{{ . }}{{ end }}",
        "checkout",
    );
    ok(
        "{{ range $q := fromJson .queries }}[{{ $q.query }}]{{ end }}",
        "[up][rate(x[5m])]",
    );
    ok(
        "{{ range $i, $q := fromJson .queries }}{{ $i }}={{ .step }} {{ end }}",
        "0=15 1=30 ",
    );
    ok("{{ range fromJson \"[]\" }}x{{ else }}empty{{ end }}", "empty");
    ok(
        "{{ range 5 }}{{ if eq . 3 }}{{ break }}{{ end }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }}{{ end }}",
        "02",
    );
    ok(
        "{{ range $k, $v := fromJson `{\"b\":2,\"a\":1}` }}{{ $k }}{{ $v }}{{ end }}",
        "a1b2",
    );
    fails("{{ if true }}x", "template: line:1: unexpected EOF");
    fails("{{ end }}", "template: line:1: unexpected {{end}}");
    fails("{{ else }}", "template: line:1: unexpected {{else}}");
    fails("{{ break }}", "template: line:1: {{break}} outside {{range}}");
    fails("{{ if }}{{ end }}", "template: line:1: missing value for if");
    fails(
        "{{ range .app }}x{{ end }}",
        "template: line:1:9: executing \"line\" at <.app>: range can't iterate over checkout",
    );
    fails(
        "{{ define \"x\" }}{{ end }}",
        "template: line:1: {{define}} is not supported in log templates",
    );
}

#[test]
fn truthiness_and_logic() {
    ok(
        "{{ not .empty }} {{ not 1 }} {{ and 1 0 2 }} {{ or 0 \"\" .app }} {{ or 0 \"\" }}",
        "true false 0 checkout ",
    );
    // `and` stops at the first false value: the division never runs.
    ok("{{ and 0 (div 1 0) }}", "0");
    ok(
        "{{ if fromJson \"{}\" }}t{{ else }}f{{ end }}{{ if now }}t{{ end }}",
        "ft",
    );
}

#[test]
fn comparisons() {
    ok(
        "{{ eq .method \"GET\" }} {{ eq 1 2 1 }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1.5 2.5 }}",
        "true true true true true true false",
    );
    ok("{{ eq (add 1 2) 3 }}", "true");
    fails(
        "{{ eq .status 503 }}",
        "template: line:1:3: executing \"line\" at <eq>: error calling eq: incompatible types for comparison",
    );
    fails(
        "{{ lt true false }}",
        "template: line:1:3: executing \"line\" at <lt>: error calling lt: invalid type for comparison",
    );
    fails(
        "{{ eq 1 }}",
        "template: line:1:3: executing \"line\" at <eq>: error calling eq: missing argument for comparison",
    );
}

#[test]
fn builtins_len_index_slice_print() {
    ok("{{ len .app }} {{ len (fromJson .queries) }}", "8 2");
    ok(
        "{{ index (fromJson .queries) 1 \"query\" }} {{ index . \"app\" }} {{ index .app 0 }}",
        "rate(x[5m]) checkout 99",
    );
    ok("{{ slice .app 1 4 }} {{ slice .app 5 }}", "hec out");
    ok(
        "{{ print 1 2 \"a\" 3 }}|{{ println \"x\" 1 }}|{{ print nil }}",
        "1 2a3|x 1\n|<nil>",
    );
    ok(
        "{{ printf \"%.2f %d %5s|%-4s|%q %x %v\" 3.14159 42 \"ab\" \"c\" \"q\" 255 1.5 }}",
        "3.14 42    ab|c   |\"q\" ff 1.5",
    );
    ok("{{ printf \"%d\" .status }}", "%!d(string=503)");
    ok(
        "{{ html \"<a href='x'>&\" }} {{ js \"it's <b>\" }} {{ urlquery \"a b&c\" }}",
        "&lt;a href=&#39;x&#39;&gt;&amp; it\\'s \\u003Cb\\u003E a+b%26c",
    );
    fails(
        "{{ len 3 }}",
        "template: line:1:3: executing \"line\" at <len>: error calling len: len of type int",
    );
    fails(
        "{{ index (fromJson .queries) 5 }}",
        "template: line:1:3: executing \"line\" at <index>: error calling index: error calling index: index out of range: 5",
    );
    fails(
        "{{ call .app }}",
        "template: line:1:3: executing \"line\" at <call>: error calling call: non-function of type string",
    );
}

#[test]
fn line_and_timestamp() {
    ok("{{ __line__ | count \"XYZ\" }}", "2");
    ok("{{ __line__ | trunc 11 }}", "level=error");
    ok("{{ __timestamp__ }}", "2023-01-15 16:08:09.902 +0000 UTC");
    ok(
        "{{ __timestamp__ | date \"2006-01-02T15:04:05.00Z07:00\" }}",
        "2023-01-15T16:08:09.90Z",
    );
    ok(
        "{{ __timestamp__ | unixEpoch }} {{ unixEpochMillis __timestamp__ }} {{ unixEpochNanos __timestamp__ }}",
        "1673798889 1673798889902 1673798889902000000",
    );
    ok(
        "{{ (__timestamp__).Unix }} {{ __timestamp__.Year }} {{ __timestamp__.Format \"Jan 2\" }}",
        "1673798889 2023 Jan 15",
    );
    fails(
        "{{ __timestamp__.Nope }}",
        "template: line:1:3: executing \"line\" at <__timestamp__.Nope>: can't evaluate field Nope in type time.Time",
    );
}

#[test]
fn dates() {
    ok("{{ date \"2006-01-02\" now }}", "2024-02-29");
    ok("{{ now }}", "2024-02-29 12:00:00 +0000 UTC");
    ok("{{ toDate \"2006-01-02\" \"2021-11-02\" | unixEpoch }}", "1635811200");
    ok(
        "{{ toDate \"2006-01-02\" \"not a date\" }}",
        "0001-01-01 00:00:00 +0000 UTC",
    );
    ok(
        "{{ toDateInZone \"2006-01-02T15:04:05Z07:00\" \"UTC\" \"2021-11-02T10:00:00+02:00\" | unixEpoch }}",
        "1635840000",
    );
    ok(
        "{{ toDateInZone \"2006-01-02\" \"UTC\" \"2021-11-02\" }}",
        "2021-11-02 00:00:00 +0000 UTC",
    );
    ok("from={{ date \"2006-01-02\" (unixToTime .from) }}", "from=2023-03-23");
    ok(
        "{{ unixToTime \"19373\" | unixEpoch }} {{ unixToTime \"1673798889902\" | unixEpochMillis }}",
        "1673827200 1673798889902",
    );
    ok("{{ date \"15:04\" 3600 }}", "01:00");
    fails(
        "{{ unixToTime \"123\" }}",
        "template: line:1:3: executing \"line\" at <unixToTime>: error calling unixToTime: unable to parse time '123': %!w(<nil>)",
    );
    fails(
        "{{ unixEpoch .app }}",
        "template: line:1:13: executing \"line\" at <.app>: wrong type for value; expected time.Time; got string",
    );
}

#[test]
fn string_functions() {
    ok(
        "{{ upper \"hello\" }} {{ lower \"HeLLo\" }} {{ ToUpper \"a\" }} {{ ToLower \"B\" }} {{ title \"hello wide-world\" }}",
        "HELLO hello A b Hello Wide-World",
    );
    ok(
        "{{ trunc 5 \"hello world\" }}|{{ trunc -5 \"hello world\" }}|{{ trunc 50 \"hi\" }}",
        "hello|world|hi",
    );
    ok(
        "{{ substr 0 5 \"hello world\" }}|{{ substr 6 11 \"hello world\" }}|{{ substr 2 50 \"hello\" }}|{{ substr 4 2 \"hello\" }}",
        "hello|world|llo|",
    );
    ok("{{ .path | substr 1 4 }}", "api");
    ok(
        "{{ contains \"he\" \"hello\" }} {{ hasPrefix \"he\" \"hello\" }} {{ hasSuffix \"lo\" \"hello\" }} {{ hasSuffix .err \"Timeout\" }}",
        "true true true false",
    );
    ok("{{ indent 2 \"a\\nb\" }}|{{ nindent 2 \"a\" }}", "  a\n  b|\n  a");
    ok(
        "{{ .cluster | replace \"-cluster\" \"\" }} {{ replace \"hello\" \"world\" \"hello world\" }}",
        "eu-west world world",
    );
    ok(
        "{{ Replace \"aaa\" \"a\" \"b\" 2 }} {{ Replace \"aaa\" \"a\" \"b\" -1 }}",
        "bba bbb",
    );
    ok("{{ repeat 3 \"ab\" }}", "ababab");
    ok(
        "[{{ trim .padded }}] [{{ TrimSpace .padded }}] {{ trimAll \"$\" \"$5.00$\" }} {{ trimPrefix \"-\" \"-hello\" }} {{ trimSuffix \"-\" \"hello-\" }}",
        "[hi] [hi] 5.00 hello hello",
    );
    ok(
        "{{ Trim \"xxhixx\" \"x\" }} {{ TrimLeft \"xxhi\" \"x\" }} {{ TrimRight \"hixx\" \"x\" }} {{ TrimPrefix \"/a\" \"/\" }} {{ TrimSuffix \"a/\" \"/\" }}",
        "hi hi hi a a",
    );
    ok(
        "{{ alignLeft 5 \"hello world\" }}|{{ alignLeft 5 \"hi\" }}|{{ alignRight 5 \"hello world\" }}|{{ alignRight 5 \"hi\" }}",
        "hello|hi   |world|   hi",
    );
    ok(
        "{{ default \"-\" .nope }} {{ default \"-\" .app }} {{ .empty | default \"none\" }} {{ default 5 0 }}",
        "- checkout none 5",
    );
    fails(
        "{{ repeat -1 \"x\" }}",
        "template: line:1:3: executing \"line\" at <repeat>: error calling repeat: strings: negative Repeat count",
    );
    fails(
        "{{ trunc .n \"hello\" }}",
        "template: line:1:9: executing \"line\" at <.n>: wrong type for value; expected int; got string",
    );
    fails(
        "{{ trunc 1.5 \"hello\" }}",
        "template: line:1:9: executing \"line\" at <1.5>: expected integer; found 1.5",
    );
    fails(
        "{{ upper 3 }}",
        "template: line:1:9: executing \"line\" at <3>: expected string; found 3",
    );
    fails(
        "{{ trunc (add 1 2) \"hello\" }}",
        "template: line:1:9: executing \"line\" at <(add 1 2)>: wrong type for value; expected int; got int64",
    );
}

#[test]
fn regex_functions() {
    ok("{{ regexReplaceAll \"(a*)bc\" \"aabcxbc\" \"${1}X\" }}", "aaXxX");
    ok("{{ regexReplaceAllLiteral \"(ts=)\" \"ts=1 ts=2\" \"$1\" }}", "$11 $12");
    ok("{{ count \"a|b\" \"abab\" }} {{ count \"o\" \"foo\" }}", "4 2");
    let pattern = "(";
    let src = format!("{{{{ count \"{pattern}\" \"x\" }}}}");
    let error = render(&src).unwrap_err().to_string();
    assert!(
        error.starts_with(
            "template: line:1:3: executing \"line\" at <count>: error calling count: error parsing regexp"
        ),
        "{error}"
    );
    // A pattern from a label is compiled per call and works the same.
    ok("{{ $p := \"o+\" }}{{ regexReplaceAll $p \"foo\" \"0\" }}", "f0");
}

#[test]
fn encodings() {
    ok(
        "{{ b64enc \"hello\" }} {{ b64dec \"aGVsbG8=\" }} {{ .b64 | b64dec }}",
        "aGVsbG8= hello hello",
    );
    ok("{{ b64dec \"a$b\" }}", "illegal base64 data at input byte 1");
    ok(
        "{{ urlencode \"a b/c?d=é~\" }} {{ urldecode \"a+b%2Fc\" }}",
        "a+b%2Fc%3Fd%3D%C3%A9~ a b/c",
    );
    fails(
        "{{ urldecode \"%zz\" }}",
        "template: line:1:3: executing \"line\" at <urldecode>: error calling urldecode: invalid URL escape \"%zz\"",
    );
    ok(
        "{{ .size | bytes }} {{ bytes \"1.5 KB\" }} {{ bytes \"42\" }}",
        "2048 1500 42",
    );
    ok(
        "{{ .latency | duration }} {{ duration_seconds \"1h2m\" }} {{ duration \"-250ms\" }}",
        "1.5 3720 -0.25",
    );
    fails(
        "{{ bytes \"3 zz\" }}",
        "template: line:1:3: executing \"line\" at <bytes>: error calling bytes: unhandled size name: zz",
    );
    fails(
        "{{ duration \"5\" }}",
        "template: line:1:3: executing \"line\" at <duration>: error calling duration: time: missing unit in duration \"5\"",
    );
}

#[test]
fn json() {
    ok("{{ fromJson \"{\\\"foo\\\": 55}\" }}", "map[foo:55]");
    ok(
        "{{ (fromJson `{\"a\":{\"b\":[1,\"x\",null,true]}}`).a.b }}",
        "[1 x <nil> true]",
    );
    ok("{{ fromJson \"not json\" }}", "<no value>");
    ok("{{ (fromJson `{\"a\":1}`).missing }}", "<no value>");
    fails(
        "{{ upper (fromJson `{\"a\":1}`).missing }}",
        "template: line:1:9: executing \"line\" at <(fromJson `{\"a\":1}`)...>: invalid value; expected string",
    );
}

#[test]
fn math() {
    ok(
        "{{ add 3 2 5 }} {{ add .n \"3\" 1.9 }} {{ sub 5 2 }} {{ mul 5 2 3 }} {{ div 10 3 }} {{ mod 10 3 }}",
        "10 11 3 30 3 1",
    );
    ok(
        "{{ addf 3.5 2 5 }} {{ addf 0.1 0.2 }} {{ subf 5.5 2 1.5 }} {{ mulf 5.5 2 2.5 }} {{ divf 10 2 4 }} {{ divf 1 3 }}",
        "10.5 0.3 2 27.5 1.25 0.3333333333333333",
    );
    ok(
        "{{ max 1 2 3 }} {{ min 1 2 3 }} {{ maxf 1 2.5 3 }} {{ minf 1.5 2.5 3 }}",
        "3 1 3 1.5",
    );
    ok(
        "{{ ceil 123.001 }} {{ floor 123.9999 }} {{ round 123.555555 3 }} {{ round 123.88571428571 5 .2 }}",
        "124 123 123.556 123.88572",
    );
    ok(
        "{{ \"3\" | int }} {{ int \"3.9\" }} {{ int \"0x1f\" }} {{ int \"x\" }} {{ \"3.5\" | float64 }} {{ float64 \"x\" }} {{ int 2.7 }}",
        "3 3 31 0 3.5 0 2",
    );
    ok(
        "{{ sub (unixEpoch now) (unixEpoch (toDate \"2006-01-02\" \"2024-02-28\")) }}",
        "129600",
    );
    fails(
        "{{ div 1 0 }}",
        "template: line:1:3: executing \"line\" at <div>: error calling div: runtime error: integer divide by zero",
    );
    fails(
        "{{ mod 1 0 }}",
        "template: line:1:3: executing \"line\" at <mod>: error calling mod: runtime error: integer divide by zero",
    );
    fails(
        "{{ divf 1 0 }}",
        "template: line:1:3: executing \"line\" at <divf>: error calling divf: decimal division by 0",
    );
}

#[test]
fn errors_name_position_and_template() {
    let error = Template::parse_named("label", "a\n{{ nope }}").unwrap_err();
    assert_eq!(
        error,
        TemplateError::Parse("template: label:2: function \"nope\" not defined".into())
    );
    let labels = labels();
    let template = Template::parse("line one\n  {{ div 1 0 }}").unwrap();
    let error = template.render(&TemplateContext::new(&labels, "", 0, 0)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "template: line:2:5: executing \"line\" at <div>: error calling div: runtime error: integer divide by zero"
    );
    let api: crate::Error = error.into();
    assert_eq!(api.error_type, crate::ErrorType::Execution);
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{{{{ {}1{} }}}}", "(".repeat(101), ")".repeat(101));
    let error = Template::parse(&deep).unwrap_err().to_string();
    assert!(error.ends_with("template nests deeper than 100 levels"), "{error}");
    let ok_depth = format!("{{{{ {}1{} }}}}", "(".repeat(50), ")".repeat(50));
    assert!(Template::parse(&ok_depth).is_ok());
    let ifs = "{{ if 1 }}".repeat(101) + &"{{ end }}".repeat(101);
    assert!(Template::parse(&ifs).is_err());
    ok("{{ printf \"%.5d|%08.3f\" 42 -1.5 }}", "00042|-001.500");
}

#[test]
fn every_listed_function_parses() {
    for name in FUNCTIONS {
        Template::parse(&format!("{{{{ if false }}}}{{{{ {name} }}}}{{{{ end }}}}"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // In the brief's list but not in Loki's function map: Loki rejects them too.
    for name in ["regexMatch", "trimSpace", "toJson", "env"] {
        assert!(Template::parse(&format!("{{{{ {name} }}}}")).is_err(), "{name}");
    }
}

#[test]
fn required_labels_and_reuse() {
    let template = Template::parse("{{ .a }}{{ if .b }}{{ upper .c.d }}{{ end }}{{ .a }}").unwrap();
    assert_eq!(template.required_labels(), vec!["a", "b", "c", "d"]);
    let pairs: [(&str, &str); 2] = [("a", "1"), ("b", "")];
    let mut out = String::new();
    for line in ["x", "y"] {
        out.clear();
        template
            .render_into(&TemplateContext::new(&pairs, line, 0, 0), &mut out)
            .unwrap();
        assert_eq!(out, "11");
    }
}

#[test]
fn labels_as_data() {
    ok(
        "{{ range $k, $v := . }}{{ if eq $k \"app\" \"method\" }}{{ $k }}={{ $v }};{{ end }}{{ end }}",
        "app=checkout;method=GET;",
    );
    ok("{{ len . }}", "14");
}

proptest! {
    /// Text without `{{` is copied through unchanged.
    #[test]
    fn text_without_actions_renders_to_itself(text in "[^{]*(\\{[^{]+)*") {
        let template = Template::parse(&text).unwrap();
        let labels = BTreeMap::new();
        let out = template.render(&TemplateContext::new(&labels, "", 0, 0)).unwrap();
        prop_assert_eq!(out, text);
    }

    /// Arbitrary input never panics either step.
    #[test]
    fn arbitrary_templates_do_not_panic(src in "(\\{\\{-? |[a-z.$|()\"` 0-9:=,-]| -?\\}\\}|\\.a|end|if |range |upper |printf \"%5.2f\" ){0,20}") {
        if let Ok(template) = Template::parse(&src) {
            let labels = labels();
            let _ = template.render(&TemplateContext::new(&labels, "line", TS, NOW));
        }
    }
}
