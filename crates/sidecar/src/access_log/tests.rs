//! What an access line holds, how it quotes what clients chose, and its clock.

use super::*;

fn line() -> AccessLine<'static> {
    AccessLine {
        time: UNIX_EPOCH + Duration::from_millis(1_764_691_412_345),
        request_id: "req-1",
        client: "10.0.0.7:5555".parse().unwrap(),
        method: "GET",
        path: Some("/event/1"),
        service: Some(("team-a", "sampleirisservice")),
        route: "proxy",
        status: 200,
        bytes: Some(31),
        duration: Duration::from_micros(1500),
        upstream_duration: Some(Duration::from_micros(900)),
        consumer: Some("ClientApp"),
        client_id: Some("clientid"),
        trace_id: Some(TraceId([0xab; 16])),
    }
}

#[test]
fn a_text_line_holds_each_field_as_key_value() {
    let text = line().format(AccessLogFormat::Text).unwrap();
    assert_eq!(
        text,
        "2025-12-02T16:03:32.345Z request_id=req-1 client=10.0.0.7:5555 method=GET \
         path=/event/1 service=team-a/sampleirisservice route=proxy status=200 bytes=31 \
         duration_ms=1.500 upstream_ms=0.900 consumer=ClientApp client_id=clientid \
         trace_id=abababababababababababababababab\n"
    );
}

#[test]
fn a_json_line_is_one_object_with_each_field() {
    let text = line().format(AccessLogFormat::Json).unwrap();
    assert_eq!(text.matches('\n').count(), 1);
    assert!(text.ends_with('\n'));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["time"], "2025-12-02T16:03:32.345Z");
    assert_eq!(value["request_id"], "req-1");
    assert_eq!(value["client"], "10.0.0.7:5555");
    assert_eq!(value["path"], "/event/1");
    assert_eq!(value["service"], "team-a/sampleirisservice");
    assert_eq!(value["status"], 200);
    assert_eq!(value["bytes"], 31);
    assert_eq!(value["duration_ms"], 1.5);
    assert_eq!(value["consumer"], "ClientApp");
    assert_eq!(value["client_id"], "clientid");
    assert_eq!(value["trace_id"], "abababababababababababababababab");
}

#[test]
fn the_log_off_writes_nothing() {
    assert_eq!(line().format(AccessLogFormat::Off), None);
}

#[test]
fn what_a_client_chose_is_quoted_and_cut_so_a_line_stays_one_line() {
    let long = "x".repeat(500);
    let mut forged = line();
    forged.consumer = Some("Eve\nforged=1 \"quoted\"");
    forged.client_id = Some(&long);
    forged.path = None;
    forged.upstream_duration = None;
    let text = forged.format(AccessLogFormat::Text).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "{text}");
    assert!(
        text.contains(r#"consumer="Eve\nforged=1 \"quoted\"""#),
        "{text}"
    );
    assert!(
        text.contains(&format!("client_id={} ", "x".repeat(128))),
        "{text}"
    );
    assert!(text.contains(" path=- "), "{text}");
    assert!(text.contains(" upstream_ms=- "), "{text}");
    let json = forged.format(AccessLogFormat::Json).unwrap();
    assert_eq!(json.matches('\n').count(), 1, "{json}");
}

#[test]
fn times_are_rfc3339_in_utc() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    // A leap day, and the last millisecond of a century's last day.
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    let end = UNIX_EPOCH + Duration::from_millis(4_102_444_799_999);
    assert_eq!(rfc3339(end), "2099-12-31T23:59:59.999Z");
}

#[test]
fn a_json_line_escapes_every_control_character_and_keeps_unicode() {
    let chosen = "Ève\u{1}\u{7f}\"\\\n\t\r\u{1f}/ü";
    let mut forged = line();
    forged.consumer = Some(chosen);
    forged.service = Some(("team a", "x\"y"));
    forged.bytes = None;
    forged.trace_id = None;
    let json = forged.format(AccessLogFormat::Json).unwrap();
    assert_eq!(json.matches('\n').count(), 1, "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["consumer"], chosen);
    assert_eq!(value["service"], "team a/x\"y");
    assert_eq!(value["bytes"], serde_json::Value::Null);
    assert_eq!(value["trace_id"], serde_json::Value::Null);
    assert_eq!(value["upstream_ms"], 0.9);
    let text = forged.format(AccessLogFormat::Text).unwrap();
    assert!(text.contains(r#" service="team a/x\"y" "#), "{text}");
}

#[test]
fn durations_are_milliseconds_rounded_to_the_microsecond() {
    let mut timed = line();
    timed.duration = Duration::from_nanos(12_345_678_500);
    timed.upstream_duration = Some(Duration::from_nanos(499));
    let text = timed.format(AccessLogFormat::Text).unwrap();
    assert!(
        text.contains(" duration_ms=12345.679 upstream_ms=0.000 "),
        "{text}"
    );
}

#[test]
fn lines_written_through_the_reused_buffer_are_each_whole() {
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = written.clone();
    let sink = LineSink::Function(Arc::new(move |line: &str| {
        kept.lock().unwrap().push(line.to_owned())
    }));
    let long = "p".repeat(2 * KEPT_LINE_CAPACITY);
    let mut first = line();
    first.path = Some(&long);
    sink.write_access_line(&first, AccessLogFormat::Text);
    sink.write_access_line(&line(), AccessLogFormat::Text);
    sink.write_access_line(&line(), AccessLogFormat::Off);
    let written = written.lock().unwrap();
    assert_eq!(written.len(), 2);
    assert!(written[0].contains(&long));
    assert_eq!(written[1], line().format(AccessLogFormat::Text).unwrap());
}

#[test]
fn numbers_and_addresses_are_written_as_std_displays_them() {
    for value in [0, 7, 10, 65_535, 1_764_691_412_345, u64::MAX] {
        let mut text = String::new();
        push_number(&mut text, value);
        assert_eq!(text, value.to_string());
    }
    for address in [
        "10.0.0.7:5555",
        "0.0.0.0:0",
        "255.255.255.255:65535",
        "[::1]:443",
    ] {
        let address: SocketAddr = address.parse().unwrap();
        let mut text = String::new();
        push_address(&mut text, address);
        assert_eq!(text, address.to_string());
    }
    assert_eq!(TraceId([0xab; 16]).to_string(), "ab".repeat(16));
}
