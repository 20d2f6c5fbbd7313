//! LogQL templates: any text either fails to parse or renders (or fails to
//! render) without panicking; a template is query input from anyone.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_query::logql_template::{Template, TemplateContext};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse(src) else {
        return;
    };
    // Labels that exercise the functions: numbers, JSON, base64, a date.
    let labels = [
        ("a", "1"),
        ("s", "Hello, World"),
        ("j", r#"{"k":[1,"x",null,{"n":2.5}]}"#),
        ("b", "aGk"),
        ("d", "2021-11-02"),
        ("e", ""),
    ];
    let context = TemplateContext::new(&labels, src, 1_673_798_889_902_000_000, 0);
    let _ = template.render(&context);
    let _ = template.required_labels();
});
