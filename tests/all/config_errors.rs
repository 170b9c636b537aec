//! Bad pipeline files: each error names the file, line and column of the
//! offending value, says what is wrong, and hints at the fix.

use crate::common::{build, runtime};
use medianode::check::CheckError;
use medianode::config::ConfigError;
use medianode::pipeline::{BuildError, Pipeline};
use medianode::supervisor::crash_report::CrashReporter;

const SOURCE: &str = "[[source]]\nid = \"tone\"\nkind = \"tone\"\n";
const SINK: &str = "[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"tone\"]\n";

/// Parses `text` (or builds it, for errors found once plugins load).
fn error_of(text: &str) -> ConfigError {
    match medianode::config::load_str("bad.toml", text.to_string()) {
        Err(e) => e.first().clone(),
        Ok(config) => match Pipeline::build(runtime(), &config, &CrashReporter::new(None)) {
            Err(BuildError::Config(e)) => e.first().clone(),
            Err(other) => panic!("expected a config error, got: {other}"),
            Ok(_) => panic!("expected an error for:\n{text}"),
        },
    }
}

#[track_caller]
fn expect(text: &str, message: &str, line: usize, column: usize) {
    let e = error_of(text);
    assert!(e.message.contains(message), "message {:?} lacks {message:?}\n{e}", e.message);
    assert_eq!((e.line, e.column), (line, column), "wrong position for {message:?}:\n{e}");
    assert_eq!(e.file.to_str(), Some("bad.toml"));
    assert!(!e.hint.is_empty());
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("error: bad.toml:{line}:{column}: ")), "{shown}");
    assert!(shown.contains("= hint: "), "{shown}");
}

#[test]
fn syntax_error() {
    expect("[pipeline\nname = \"x\"\n", "unclosed table", 1, 10);
}

#[test]
fn unknown_key() {
    expect(&format!("{SOURCE}frequncy = 440.0\n{SINK}"), "unknown field `frequncy`", 4, 1);
}

#[test]
fn unknown_key_in_limits() {
    let text =
        format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\ninputs = [\"tone\"]\nlimits = {{ memroy = \"1MiB\" }}\n{SINK}");
    expect(&text, "unknown field `memroy`", 8, 12);
}

#[test]
fn wrong_value_type() {
    expect(&format!("{SOURCE}frequency = \"loud\"\n{SINK}"), "invalid type", 4, 13);
}

#[test]
fn bad_duration_unit() {
    let text = format!(
        "{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\ninputs = [\"tone\"]\nlimits = {{ deadline = \"5 parsecs\" }}\n{SINK}"
    );
    expect(&text, "bad duration `5 parsecs`", 8, 23);
}

#[test]
fn bad_size_unit() {
    let text =
        format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\ninputs = [\"tone\"]\nlimits = {{ memory = \"lots\" }}\n{SINK}");
    expect(&text, "bad size `lots`", 8, 21);
}

#[test]
fn missing_plugin_file() {
    let text = format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"plugins/missing.wasm\"\ninputs = [\"tone\"]\n{SINK}");
    expect(&text, "cannot read plugin file", 6, 10);
}

#[test]
fn unknown_stock_plugin() {
    let text = format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gian\"\ninputs = [\"tone\"]\n{SINK}");
    let e = error_of(&text);
    assert!(e.hint.contains("passthrough, gain, biquad, gate, compressor, limiter, meter, faulty, signaling"), "{e}");
    expect(&text, "unknown stock plugin `gian`", 6, 10);
}

#[test]
fn digest_mismatch() {
    let text =
        format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\nsha256 = \"{}\"\ninputs = [\"tone\"]\n{SINK}", "0".repeat(64));
    expect(&text, "digest mismatch", 7, 10);
}

#[test]
fn digest_pin_that_matches_is_accepted() {
    let bytes = std::fs::read(medianode::runtime::stock::path("gain").unwrap()).unwrap();
    let digest = runtime().load("stock:gain", &bytes, 512 << 10).unwrap().digest.clone();
    let text = format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\nsha256 = \"{digest}\"\ninputs = [\"tone\"]\n{SINK}");
    assert!(build(&text).is_ok());
}

#[test]
fn type_mismatched_link() {
    let text = "[[source]]\nid = \"frames\"\nkind = \"frames\"\n[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\ninputs = [\"frames\"]\n[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"g\"]\n";
    expect(text, "type mismatch: `frames` produces frames, but `g` (audio-dsp) takes audio blocks", 7, 11);
}

#[test]
fn meter_sink_fed_frames() {
    let text = "[[source]]\nid = \"frames\"\nkind = \"frames\"\n[[sink]]\nid = \"m\"\nkind = \"meter\"\ninputs = [\"frames\"]\n";
    expect(text, "type mismatch", 7, 11);
}

#[test]
fn cycle() {
    let text = format!(
        "{SOURCE}[[stage]]\nid = \"a\"\nplugin = \"stock:gain\"\ninputs = [\"tone\", \"b\"]\n[[stage]]\nid = \"b\"\nplugin = \"stock:gain\"\ninputs = [\"a\"]\n{SINK}"
    );
    expect(&text, "cycle: a <- b <- a", 11, 11);
}

#[test]
fn dangling_link() {
    expect(&format!("{SOURCE}[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"nope\"]\n"), "unknown input `nope`", 7, 11);
}

#[test]
fn sink_used_as_input() {
    let text = format!("{SOURCE}{SINK}[[sink]]\nid = \"second\"\nkind = \"null\"\ninputs = [\"out\"]\n");
    let e = error_of(&text);
    assert!(e.hint.contains("sinks produce nothing"), "{e}");
    expect(&text, "unknown input `out`", 11, 11);
}

#[test]
fn self_input() {
    let text = format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\ninputs = [\"g\"]\n{SINK}");
    expect(&text, "`g` lists itself as an input", 7, 11);
}

#[test]
fn duplicate_stage_id() {
    let text = format!("{SOURCE}[[stage]]\nid = \"tone\"\nplugin = \"stock:gain\"\ninputs = [\"tone\"]\n{SINK}");
    let e = error_of(&text);
    assert!(e.hint.contains("already used on line 2"), "{e}");
    expect(&text, "duplicate id `tone`", 5, 6);
}

#[test]
fn bad_id() {
    expect(&format!("[[source]]\nid = \"Tone 1\"\nkind = \"tone\"\n{SINK}"), "bad id `Tone 1`", 2, 6);
}

#[test]
fn fail_open_on_an_e2ee_stage() {
    let text = format!(
        "{SOURCE}[[stage]]\nid = \"enc\"\nplugin = \"stock:gain\"\ninputs = [\"tone\"]\ne2ee = true\nfailure = \"fail-open\"\n{SINK}"
    );
    let e = error_of(&text);
    assert!(e.hint.contains("in the clear"), "{e}");
    expect(&text, "E2EE stage and cannot fail open", 9, 11);
}

#[test]
fn unknown_failure_policy() {
    let text = format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\ninputs = [\"tone\"]\nfailure = \"retry\"\n{SINK}");
    expect(&text, "unknown failure policy `retry`", 8, 11);
}

#[test]
fn unknown_source_kind() {
    expect(&format!("[[source]]\nid = \"mic\"\nkind = \"microphone\"\n{SINK}"), "unknown source kind `microphone`", 3, 8);
}

#[test]
fn setting_of_another_source_kind() {
    expect(&format!("{SOURCE}size = \"1200B\"\n{SINK}"), "`size` is not a setting of tone sources", 4, 8);
}

#[test]
fn setting_of_another_sink_kind() {
    expect(
        &format!("{SOURCE}[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"tone\"]\ncapacity = 8\n"),
        "`capacity` is not a setting of null sinks",
        8,
        12,
    );
}

#[test]
fn no_sources() {
    expect(SINK, "the pipeline has no sources", 1, 1);
}

#[test]
fn empty_inputs() {
    expect(&format!("{SOURCE}[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = []\n"), "`out` has no inputs", 7, 10);
}

#[test]
fn jitter_out_of_range() {
    let text = format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\ninputs = [\"tone\"]\nrestart = {{ jitter = 2.0 }}\n{SINK}");
    expect(&text, "jitter out of range", 8, 22);
}

#[test]
fn unknown_pace() {
    expect(&format!("[pipeline]\npace = \"fast\"\n{SOURCE}{SINK}"), "unknown pace `fast`", 2, 8);
}

#[test]
fn file_that_does_not_exist() {
    let e = medianode::config::load(std::path::Path::new("/nonexistent/pipeline.toml")).unwrap_err();
    let e = e.first();
    assert_eq!(e.line, 0);
    assert!(e.message.contains("cannot read the pipeline file"), "{e}");
}

#[test]
fn plugin_config_rejected_by_init_is_a_start_error() {
    let text =
        format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\ninputs = [\"tone\"]\nconfig = {{ gain-db = 100.0 }}\n{SINK}");
    // Located at the key the plugin refused, as `check` does.
    match build(&text) {
        Err(BuildError::Config(errors)) => {
            let e = errors.first();
            assert!(e.message.contains("stage `g`") && e.message.contains("out of range"), "{e}");
            assert_eq!(e.line, text.lines().position(|l| l.starts_with("config =")).unwrap() + 1, "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("gain-db = 100 should be refused"),
    }
}

#[test]
fn sandbox_settings_on_a_builtin_stage() {
    let text = format!("{SOURCE}[[stage]]\nid = \"enc\"\nbuiltin = \"opus-encoder\"\ninputs = [\"tone\"]\nfailure = \"fail-open\"\n{SINK}");
    expect(&text, "`failure` is not a setting of built-in stages", 8, 11);
}

#[test]
fn bad_opus_bitrate() {
    let text =
        format!("{SOURCE}[[stage]]\nid = \"enc\"\nbuiltin = \"opus-encoder\"\ninputs = [\"tone\"]\nconfig = {{ bitrate = 1 }}\n{SINK}");
    expect(&text, "bitrate = 1 is out of range", 8, 10);
}

#[test]
fn opus_decoder_fed_audio() {
    let text = format!("{SOURCE}[[stage]]\nid = \"dec\"\nbuiltin = \"opus-decoder\"\ninputs = [\"tone\"]\n{SINK}");
    expect(&text, "type mismatch: `tone` produces audio blocks", 7, 11);
}

#[test]
fn wav_source_without_a_file() {
    let text =
        "[[source]]\nid = \"in\"\nkind = \"wav\"\npath = \"nowhere.wav\"\n[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"in\"]\n";
    expect(text, "cannot read WAV file", 4, 8);
}

#[test]
fn audio_device_that_does_not_exist() {
    let text = "[[source]]\nid = \"mic\"\nkind = \"device\"\ndevice = \"no such microphone\"\n[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"mic\"]\n";
    let e = error_of(text);
    assert!(e.message.contains("no audio input device named `no such microphone`"), "{e}");
    assert!(e.message.contains("input devices: "), "the error lists the devices there are: {e}");
    assert!(e.hint.contains("medianode devices"), "{e}");
}

const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\n";
const ROOMS: &str = "[[stage]]\nid = \"rooms\"\nplugin = \"stock:signaling\"\n";

/// Errors found once the plugins are compiled (the `[server]`'s stages'
/// kinds), as `medianode check` finds them.
fn server_error_of(text: &str) -> ConfigError {
    let config = medianode::config::load_str("bad.toml", text.to_string()).unwrap_or_else(|e| panic!("{e}"));
    match medianode::check::check(runtime(), &config) {
        Err(CheckError::Config(e)) => e.first().clone(),
        Ok(_) => panic!("expected an error for:\n{text}"),
    }
}

#[test]
fn server_values_are_checked() {
    expect("[server]\nlisten = \"localhost\"\n", "`localhost` is not an address with a port", 2, 10);
    expect("[server]\nmedia-ip = \"the lan\"\n", "`the lan` is not an IP address", 2, 12);
    expect("[server]\nrate = -1.0\n", "rate must be a positive number", 2, 8);
    expect("[server]\nheartbeat = \"30s\"\nheartbeat-timeout = \"10s\"\n", "heartbeat-timeout must be longer", 3, 21);
    expect("[server]\ntoken-secret-env = \"MEDIANODE_TEST_UNSET_SECRET\"\n", "$MEDIANODE_TEST_UNSET_SECRET is not set", 2, 20);
}

#[test]
fn a_stage_without_inputs_needs_a_server() {
    expect(&format!("{SOURCE}{ROOMS}{SINK}"), "`rooms` has no inputs", 5, 6);
}

#[test]
fn a_signaling_plugin_in_a_media_pipeline_is_refused() {
    expect(&format!("{SOURCE}{ROOMS}inputs = [\"tone\"]\n{SINK}"), "signaling plugins serve the [server]", 6, 10);
}

#[test]
fn the_server_needs_one_signaling_stage_and_media_stages_need_inputs() {
    let e = server_error_of(SERVER);
    assert!(e.message.contains("no signaling stage"), "{e}");
    assert_eq!(e.line, 1);
    let e = server_error_of(&format!("{SERVER}{ROOMS}[[stage]]\nid = \"again\"\nplugin = \"stock:signaling\"\n"));
    assert!(e.message.contains("a second signaling stage `again`"), "{e}");
    let e = server_error_of(&format!("{SERVER}{ROOMS}[[stage]]\nid = \"g\"\nplugin = \"stock:gain\"\n"));
    assert!(e.message.contains("`g` has no inputs, but audio-dsp stages need them"), "{e}");
    assert!(e.hint.contains("inputs"));
}

const CLIENT: &str = "[client]\nserver = \"ws://127.0.0.1:8080/ws\"\nroom = \"demo\"\nuser = \"edge\"\n";

#[test]
fn a_client_with_a_bad_server_url() {
    let text = CLIENT.replace("ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080/ws");
    expect(&text, "is not a WebSocket URL", 2, 10);
}

#[test]
fn a_server_and_a_client_in_one_file() {
    let e = error_of(&format!("[server]\n{CLIENT}"));
    assert!(e.message.contains("either a server or a client"), "{e}");
    assert!(e.hint.contains("files of their own"), "{e}");
}

/// Found once the plugin loads: a stage serving the [client] is an E2EE
/// stage, which may never fail open.
#[test]
fn fail_open_on_the_e2ee_stage_of_a_client() {
    let text = format!("{CLIENT}[[stage]]\nid = \"e2ee\"\nplugin = \"stock:e2ee\"\nfailure = \"fail-open\"\n");
    let config = medianode::config::load_str("bad.toml", text).expect("valid until the plugin loads");
    match medianode::edge::start(runtime(), &config, &CrashReporter::new(None)) {
        Err(BuildError::Config(e)) => {
            let e = e.first();
            assert!(e.message.contains("E2EE stage and cannot fail open"), "{e}");
            assert!(e.hint.contains("in the clear"), "{e}");
            assert_eq!(e.line, 5, "{e}");
        }
        Err(other) => panic!("expected a config error, got: {other}"),
        Ok(_) => panic!("an E2EE stage started with fail-open"),
    }
}

/// `medianode check` on a file with five independent errors, of the text
/// and of what it names on this machine: all five, each located.
#[test]
fn check_reports_every_error_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("five.toml");
    let text = r#"[pipeline]
tick = "10 parsecs"

[[source]]
id = "voice"
kind = "wav"
path = "missing.wav"

[[stage]]
id = "gain"
plugin = "plugins/missing.wasm"
inputs = ["voice"]

[[stage]]
id = "gate"
plugin = "stock:gate"
inputs = ["gain"]
failure = "retry"

[[sink]]
id = "out"
kind = "meter"
inputs = ["gaet"]
"#;
    std::fs::write(&path, text).expect("write");
    let e = match medianode::check::check_file(runtime(), &path) {
        Err(CheckError::Config(errors)) => errors,
        other => panic!("expected config errors, got {other:?}"),
    };
    let at: Vec<(usize, usize)> = e.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, [(2, 8), (7, 8), (11, 10), (18, 11), (23, 11)], "{e}");
    let shown = e.to_string();
    for message in ["bad duration", "cannot read WAV file", "cannot read plugin file", "unknown failure policy", "unknown input `gaet`"] {
        assert!(shown.contains(message), "{message:?} missing from:\n{shown}");
    }
    assert_eq!(shown.matches(&format!("error: {}:", path.display())).count(), 5, "{shown}");
}

/// `check` binds nothing: the server in this file listens on an address no
/// interface of any machine has (TEST-NET-1), so binding it would fail,
/// and the check passes. Its stages' `init` still runs in the sandbox.
#[test]
fn check_binds_no_port() {
    let text = "[server]\nlisten = \"192.0.2.1:8080\"\nmedia-ip = \"192.0.2.1\"\n[[stage]]\nid = \"rooms\"\nplugin = \"stock:signaling\"\n[[stage]]\nid = \"route\"\nplugin = \"stock:forward\"\n";
    assert!(std::net::TcpListener::bind("192.0.2.1:0").is_err(), "192.0.2.1 is assigned here; the test needs an unbound address");
    let config = medianode::config::load_str("server.toml", text.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let summary = medianode::check::check(runtime(), &config).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.contains("server would listen on 192.0.2.1:8080"), "{summary}");
    let bad_init = text.replace("plugin = \"stock:forward\"\n", "plugin = \"stock:forward\"\nconfig = { nonsense = 1 }\n");
    let config = medianode::config::load_str("server.toml", bad_init).unwrap_or_else(|e| panic!("{e}"));
    match medianode::check::check(runtime(), &config) {
        // Located at the setting the plugin refused.
        Err(CheckError::Config(errors)) => {
            let shown = errors.to_string();
            assert!(shown.contains("server.toml:10:12") && shown.contains("stage `route`") && shown.contains("nonsense"), "{shown}");
            assert!(!shown.contains("line 1 column"), "no JSON position: {shown}");
        }
        Ok(summary) => panic!("init with a bad config should fail the check: {summary}"),
    }
}

/// A plugin built against another version of the plugin contract (here a
/// component that exports `medianode:plugin/dsp@0.1.0`, made by hand) is
/// refused with both versions named, at its line.
#[test]
fn a_plugin_of_another_contract_version_is_refused_by_name() {
    use wasm_encoder::{Component, ComponentExportKind, ComponentExportSection, ComponentInstanceSection};
    let mut component = Component::new();
    let mut instances = ComponentInstanceSection::new();
    instances.export_items(std::iter::empty::<(&str, ComponentExportKind, u32)>());
    component.section(&instances);
    let mut exports = ComponentExportSection::new();
    exports.export("medianode:plugin/dsp@0.1.0", ComponentExportKind::Instance, 0, None);
    component.section(&exports);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("old.wasm"), component.finish()).expect("write");
    let path = dir.path().join("old.toml");
    std::fs::write(
        &path,
        format!("{SOURCE}[[stage]]\nid = \"g\"\nplugin = \"old.wasm\"\ninputs = [\"tone\"]\n{}", SINK.replace("[\"tone\"]", "[\"g\"]")),
    )
    .expect("write");
    let e = match medianode::check::check_file(runtime(), &path) {
        Err(CheckError::Config(errors)) => errors,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let shown = e.to_string();
    assert!(shown.contains("medianode:plugin@0.1.0") && shown.contains("medianode:plugin@0.3.0"), "{shown}");
    assert_eq!(e.first().line, SOURCE.lines().count() + 3, "{shown}");
}

const ROOM_SINK: &str = "[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"everyone\"]\n";

#[test]
fn a_room_source_without_a_client() {
    expect(&format!("[[source]]\nid = \"everyone\"\nkind = \"room\"\n{ROOM_SINK}"), "a room source needs a [client]", 1, 1);
}

#[test]
fn a_room_source_of_three_channels() {
    let text = format!("{CLIENT}[[source]]\nid = \"everyone\"\nkind = \"room\"\nchannels = 3\n{ROOM_SINK}");
    expect(&text, "a room source mixes 1 or 2 channels", 8, 12);
}

#[test]
fn cluster_values_are_checked() {
    let cluster = |body: &str| format!("{SERVER}[cluster]\n{body}");
    expect(&cluster("redis = \"127.0.0.1:6379\"\nnode = \"a\"\n"), "`127.0.0.1:6379` is not a Redis URL", 4, 9);
    expect(&cluster("redis = \"redis://r\"\nnode = \"a b\"\n"), "node must be 1 to 64 letters", 5, 8);
    expect(&cluster("redis = \"redis://r\"\nnode = \"a\"\nurl = \"http://x\"\n"), "`http://x` is not a WebSocket URL", 6, 7);
    let everywhere = "[server]\nlisten = \"0.0.0.0:8080\"\n[cluster]\nredis = \"redis://r\"\nnode = \"a\"\n";
    expect(everywhere, "cannot reach a node listening on every address", 3, 1);
    expect("[cluster]\nredis = \"redis://r\"\nnode = \"a\"\n", "a cluster is made of server nodes", 1, 1);
    expect(&CLIENT.replace("server = \"ws://127.0.0.1:8080/ws\"", "server = []"), "no server given", 2, 10);
}

/// A node whose Redis does not answer does not start, and says which
/// table to look at.
#[tokio::test]
async fn a_cluster_node_without_its_redis_does_not_start() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[cluster]\nredis = \"redis://127.0.0.1:{port}\"\nnode = \"a\"\n\
         [[stage]]\nid = \"rooms\"\nplugin = \"stock:signaling\"\n"
    );
    let config = medianode::config::load_str("bad.toml", text).expect("a valid file");
    let Err(BuildError::Config(e)) = medianode::server::start(runtime(), &config, &CrashReporter::new(None)).await else {
        panic!("the node started without its Redis");
    };
    let e = e.first();
    assert!(e.message.contains("cannot join the cluster") && e.message.contains("cannot reach Redis"), "{e}");
    assert_eq!((e.line, e.column), (3, 1), "{e}");
}
