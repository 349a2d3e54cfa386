//! One test per class of error: the exact `line:col` and the gist of the
//! message, as an operator would read it.

use std::path::Path;

use super::{error, errors};
use crate::config::Config;

const API: &str = "[[program]]\nname = \"api\"\ncommand = [\"/bin/api\"]\n";

#[test]
fn syntax_error_stops_the_parse() {
    let (line, col, message) = error("[daemon]\nstop_timeout = 10s\n");
    assert_eq!((line, col), (2, 16));
    assert!(message.starts_with("TOML syntax error:"), "{message}");
}

#[test]
fn duplicate_toml_key_is_a_syntax_error() {
    let (line, col, message) = error("[daemon]\nlog_lines = 1\nlog_lines = 2\n");
    assert_eq!((line, col), (3, 1));
    assert!(message.contains("duplicate key \"log_lines\""), "{message}");
}

#[test]
fn display_is_file_line_col_message() {
    let e = Config::parse(
        &format!("{API}restrat = \"always\"\n"),
        Path::new("conf/forkd.toml"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "conf/forkd.toml:4:1: unknown key \"restrat\" in [[program]] \"api\" (did you mean \"restart\"?)"
    );
}

#[test]
fn unknown_key_without_a_close_match_lists_allowed_keys() {
    let (line, col, message) = error(&format!("{API}  frobnicate = 1\n"));
    assert_eq!((line, col), (4, 3));
    assert!(message.starts_with("unknown key \"frobnicate\" in [[program]] \"api\"; allowed keys: name, command, restart"), "{message}");
}

#[test]
fn unknown_keys_in_every_table() {
    let text = r#"[daemon]
stop_timout = "1s"

[[program]]
name = "api"
command = ["/bin/api"]
rlimits = { nofiles = 10 }

[[pool]]
name = "p"
worker = "builtin:echo"
wokers = 2

[[service]]
name = "s"
listen = ["tcp://127.0.0.1:1"]
handler = "echo"
idle_timout = "1s"

[deamon]
"#;
    let all = errors(text);
    let at: Vec<(usize, usize)> = all.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(at, [(2, 1), (7, 13), (12, 1), (18, 1), (20, 2)], "{all:#?}");
    assert!(all[0]
        .2
        .contains("in [daemon] (did you mean \"stop_timeout\"?)"));
    assert!(all[1]
        .2
        .contains("\"nofiles\" in rlimits of [[program]] \"api\" (did you mean \"nofile\"?)"));
    assert!(all[2]
        .2
        .contains("in [[pool]] \"p\" (did you mean \"workers\"?)"));
    assert!(all[3]
        .2
        .contains("in [[service]] \"s\" (did you mean \"idle_timeout\"?)"));
    assert!(all[4]
        .2
        .contains("\"deamon\" at the top level (did you mean \"daemon\"?)"));
}

#[test]
fn wrong_type_says_what_is_expected() {
    let (line, col, message) = error(&format!("{API}instances = \"two\"\n"));
    assert_eq!((line, col), (4, 13));
    assert_eq!(
        message,
        "instances must be an integer, found the string \"two\""
    );
}

#[test]
fn bad_duration() {
    let (line, col, message) = error(&format!("{API}stop_timeout = \"10 sec\"\n"));
    assert_eq!((line, col), (4, 16));
    assert_eq!(
        message,
        "bad duration \"10 sec\" for stop_timeout: use a number with a unit: 250ms, 10s, 5m, 1h"
    );
}

#[test]
fn bad_size() {
    let text = "[[pool]]\nname = \"p\"\nworker = \"builtin:echo\"\nmax_frame = \"16 megs\"\n";
    let (line, col, message) = error(text);
    assert_eq!((line, col), (4, 13));
    assert!(
        message.starts_with("bad size \"16 megs\" for max_frame: use"),
        "{message}"
    );
}

#[test]
fn size_above_the_limit() {
    let text = "[[pool]]\nname = \"p\"\nworker = \"builtin:echo\"\nmax_frame = \"2GiB\"\n";
    let (line, col, message) = error(text);
    assert_eq!((line, col), (4, 13));
    assert!(
        message.contains("the most allowed is 1073741824 bytes"),
        "{message}"
    );
}

#[test]
fn bad_signal_suggests_the_close_one() {
    let (line, col, message) = error(&format!("{API}stop_signal = \"TREM\"\n"));
    assert_eq!((line, col), (4, 15));
    assert_eq!(
        message,
        "bad signal \"TREM\" for stop_signal: did you mean \"TERM\"?"
    );
}

#[test]
fn bad_listen_address() {
    let text = "[[service]]\nname = \"s\"\nhandler = \"echo\"\nlisten = [\"tcp://127.0.0.1:7000\", \"tcp://localhost:7000\"]\n";
    let (line, col, message) = error(text);
    assert_eq!((line, col), (4, 35));
    assert!(message.starts_with("bad listen address \"tcp://localhost:7000\": the host \"localhost\" must be an IP address"), "{message}");
}

#[test]
fn bad_enum_value_lists_the_allowed_values() {
    let (line, col, message) = error(&format!("{API}restart = \"onfailure\"\n"));
    assert_eq!((line, col), (4, 11));
    assert_eq!(
        message,
        "bad value \"onfailure\" for restart: use one of \"always\", \"on-failure\", \"never\" (did you mean \"on-failure\"?)"
    );
}

#[test]
fn bad_mode_value() {
    let (line, col, message) = error(&format!("{API}umask = \"0999\"\n"));
    assert_eq!((line, col), (4, 9));
    assert!(
        message.starts_with("bad mode \"0999\" for umask"),
        "{message}"
    );
    let (_, _, message) = error(&format!("{API}umask = 22\n"));
    assert_eq!(
        message,
        "umask = 22 is decimal; write the mode in octal: \"022\" or 0o22"
    );
    let (_, _, message) = error(&format!("{API}umask = 0o1777\n"));
    assert!(message.contains("beyond 0o777"), "{message}");
}

#[test]
fn duplicate_names_across_kinds_point_at_the_second() {
    let text = r#"[[service]]
name = "api"
listen = ["tcp://127.0.0.1:1"]
handler = "echo"

[[program]]
name = "api"
command = ["/bin/api"]
"#;
    let (line, col, message) = error(text);
    assert_eq!((line, col), (7, 8));
    assert!(
        message.starts_with("duplicate name \"api\": the [[service]] at line 2 already uses it"),
        "{message}"
    );
}

#[test]
fn empty_command_and_empty_program_name() {
    let text = "[[program]]\nname = \"a\"\ncommand = []\n\n[[program]]\nname = \"b\"\ncommand = [\"\", \"x\"]\n";
    let all = errors(text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!((all[0].0, all[0].1), (3, 11));
    assert!(
        all[0].2.starts_with("command must not be empty"),
        "{}",
        all[0].2
    );
    assert_eq!((all[1].0, all[1].1), (7, 12));
    assert!(
        all[1].2.starts_with("command[0] must not be empty"),
        "{}",
        all[1].2
    );
}

#[test]
fn missing_required_keys_point_at_the_table_header() {
    let text = "[daemon]\n\n[[program]]\ninstances = 2\n";
    let all = errors(text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!((all[0].0, all[0].1), (3, 1));
    assert!(all[0]
        .2
        .starts_with("missing required key \"name\" in [[program]]"));
    assert_eq!((all[1].0, all[1].1), (3, 1));
    assert!(all[1]
        .2
        .starts_with("missing required key \"command\" in [[program]]"));
}

#[test]
fn bad_name() {
    let (line, col, message) = error("[[program]]\nname = \"api:1\"\ncommand = [\"a\"]\n");
    assert_eq!((line, col), (2, 8));
    assert!(
        message.starts_with("bad name \"api:1\": a name is 1 to 64"),
        "{message}"
    );
    let (_, _, message) = error(&format!(
        "[[pool]]\nname = \"{}\"\nworker = \"builtin:echo\"\n",
        "x".repeat(65)
    ));
    assert!(message.starts_with("bad name"), "{message}");
}

#[test]
fn every_error_of_several_entries_in_file_order() {
    let text = r#"[[program]]
name = "a"
command = ["/bin/a"]
instances = 0
stop_timeout = "5 s"

[[program]]
name = "b"
command = ["/bin/b"]
restrat = "always"
"#;
    let all = errors(text);
    let at: Vec<(usize, usize)> = all.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(at, [(4, 13), (5, 16), (10, 1)], "{all:#?}");
    assert!(all[0].2.contains("instances must be at least 1"));
}

#[test]
fn backoff_initial_longer_than_backoff_max() {
    let (line, col, message) = error(&format!("{API}backoff_initial = \"1m\"\n"));
    assert_eq!((line, col), (4, 19));
    assert!(
        message.starts_with("backoff_initial (60s) is longer than backoff_max (30s)"),
        "{message}"
    );
}

#[test]
fn single_bracket_program_table() {
    let (line, col, message) = error("[program]\nname = \"a\"\ncommand = [\"a\"]\n");
    assert_eq!((line, col), (1, 1));
    assert!(
        message.contains("write one [[program]] header"),
        "{message}"
    );
}

#[test]
fn pool_needs_exactly_one_worker_kind() {
    let both = "[[pool]]\nname = \"p\"\nworker = \"builtin:echo\"\ncommand = [\"/bin/p\"]\n";
    let (line, col, message) = error(both);
    assert_eq!((line, col), (4, 11));
    assert!(
        message.contains("sets both worker and command"),
        "{message}"
    );
    let (line, col, message) = error("[[pool]]\nname = \"p\"\n");
    assert_eq!((line, col), (1, 1));
    assert!(message.contains("needs a worker"), "{message}");
    let (_, _, message) = error("[[pool]]\nname = \"p\"\nworker = \"upper\"\n");
    assert!(
        message.starts_with("bad worker \"upper\": use \"builtin:NAME\""),
        "{message}"
    );
}

const LISTEN: &str = "listen = [\"tcp://127.0.0.1:7000\"]\n";

#[test]
fn pool_handler_needs_a_defined_pool() {
    let text = format!(
        "[[pool]]\nname = \"upper\"\nworker = \"builtin:upper\"\n\n[[service]]\nname = \"s\"\n{LISTEN}handler = \"pool\"\npool = \"uper\"\n"
    );
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (9, 8));
    assert_eq!(
        message,
        "no [[pool]] named \"uper\" (did you mean \"upper\"?)"
    );
    let (line, col, message) = error(&format!(
        "[[service]]\nname = \"s\"\n{LISTEN}handler = \"pool\"\n"
    ));
    assert_eq!((line, col), (4, 11));
    assert!(message.contains("needs pool = \"NAME\""), "{message}");
}

#[test]
fn pool_handler_frames_fit_the_pool_and_never_come_over_udp() {
    let pool = "[[pool]]\nname = \"upper\"\nworker = \"builtin:upper\"\nmax_frame = \"1KiB\"\n\n";
    let text = format!(
        "{pool}[[service]]\nname = \"s\"\n{LISTEN}handler = \"pool\"\npool = \"upper\"\nmax_frame = \"2KiB\"\n"
    );
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (11, 13));
    assert_eq!(
        message,
        "max_frame (2048 bytes) is over the max_frame of [[pool]] \"upper\" (1024 bytes), which refuses larger jobs by closing the connection; lower this one or raise the pool's"
    );
    let text = format!(
        "{pool}[[service]]\nname = \"s\"\nlisten = [\"tcp://127.0.0.1:7000\", \"udp://127.0.0.1:7000\"]\nhandler = \"pool\"\npool = \"upper\"\n"
    );
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (8, 35));
    assert_eq!(
        message,
        "handler = \"pool\" cannot serve udp:// listeners; only echo and chat speak UDP"
    );
}

#[test]
fn handler_cross_checks() {
    let service = |rest: &str| format!("[[service]]\nname = \"s\"\n{rest}");
    // exec needs a command, and not in event mode.
    let (line, col, message) = error(&service(&format!("{LISTEN}handler = \"exec\"\n")));
    assert_eq!((line, col), (4, 11));
    assert!(message.contains("needs command"), "{message}");
    let text = service(&format!(
        "{LISTEN}mode = \"event\"\nhandler = \"exec\"\ncommand = [\"/bin/cat\"]\n"
    ));
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (4, 8));
    assert!(
        message.contains("cannot run in mode = \"event\""),
        "{message}"
    );
    // files, ftp and http need a root.
    let (line, col, message) = error(&service(&format!("{LISTEN}handler = \"http\"\n")));
    assert_eq!((line, col), (4, 11));
    assert!(message.contains("needs root"), "{message}");
    // udp only for echo and chat; chat needs udp.
    let text = service("listen = [\"udp://127.0.0.1:1\"]\nhandler = \"ftp\"\nroot = \"/srv\"\n");
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (3, 11));
    assert!(message.contains("cannot serve udp://"), "{message}");
    // chat speaks only UDP: the stream listener is the error.
    let (line, col, message) = error(&service(&format!("{LISTEN}handler = \"chat\"\n")));
    assert_eq!((line, col), (3, 11));
    assert!(
        message.contains("use a udp://HOST:PORT listener"),
        "{message}"
    );
    // command waits for its program in a process of its own.
    let text = service(&format!(
        "{LISTEN}mode = \"event\"\nhandler = \"command\"\ncommands = {{ date = [\"/bin/date\"] }}\n"
    ));
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (4, 8));
    assert!(
        message.contains("use mode = \"fork\" or \"prefork\""),
        "{message}"
    );
}

#[test]
fn listen_must_be_a_non_empty_array() {
    let (line, col, message) =
        error("[[service]]\nname = \"s\"\nhandler = \"echo\"\nlisten = []\n");
    assert_eq!((line, col), (4, 10));
    assert!(
        message.starts_with("listen must name at least one address"),
        "{message}"
    );
    let (_, _, message) =
        error("[[service]]\nname = \"s\"\nhandler = \"echo\"\nlisten = \"tcp://127.0.0.1:1\"\n");
    assert!(
        message.starts_with("listen must be an array of addresses"),
        "{message}"
    );
}

#[test]
fn spare_and_max_workers_are_ordered() {
    let text = format!(
        "[[service]]\nname = \"s\"\n{LISTEN}handler = \"echo\"\nmode = \"prefork\"\nmin_spare = 4\nmax_spare = 2\nmax_workers = 3\nworkers = 8\n"
    );
    let all = errors(&text);
    let at: Vec<(usize, usize)> = all.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(at, [(7, 13), (9, 11)], "{all:#?}");
    assert_eq!(all[0].2, "max_spare (2) is less than min_spare (4)");
    assert_eq!(all[1].2, "workers (8) is more than max_workers (3)");
}

#[test]
fn columns_count_characters_not_bytes() {
    let (line, col, _) =
        error("[[program]]\nname = \"api\" # é\ncommand = [\"a\"]\nenv = { \"é\" = 1 }\n");
    assert_eq!((line, col), (4, 15));
}

#[test]
fn an_unreadable_file_has_no_position() {
    let e = Config::load(Path::new("/nonexistent/forkd.toml")).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (0, 0));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/forkd.toml: cannot read the configuration"));
}

#[test]
fn an_unknown_builtin_worker_names_the_builtins() {
    let text = "[[pool]]\nname = \"p\"\nworker = \"builtin:uper\"\n";
    let (line, col, message) = error(text);
    assert_eq!((line, col), (3, 10));
    assert!(
        message.contains("no built-in worker \"uper\"; did you mean \"builtin:upper\"?"),
        "{message}"
    );
    assert!(message.contains("upper, sha256, sleep, echo"), "{message}");
}

#[test]
fn files_keys_are_checked_where_they_are_written() {
    let service = "[[service]]\nname = \"drop\"\nlisten = [\"tcp://127.0.0.1:8080\"]\nhandler = \"files\"\nroot = \"/srv\"\n";
    let (line, col, message) = error(&format!("{service}max_file_size = \"2TiB\"\n"));
    assert_eq!((line, col), (6, 17));
    assert!(
        message.contains("the most allowed is 1099511627776 bytes"),
        "{message}"
    );
    let (line, col, message) = error(&format!("{service}overwrite = \"no\"\n"));
    assert_eq!((line, col), (6, 13));
    assert!(message.contains("true or false"), "{message}");
}

fn service(rest: &str) -> String {
    format!("[[service]]\nname = \"s\"\n{rest}")
}

#[test]
fn command_allow_lists_are_checked_entry_by_entry() {
    let command = |rest: &str| service(&format!("{LISTEN}handler = \"command\"\n{rest}"));
    let (line, col, message) = error(&command(""));
    assert_eq!((line, col), (4, 11));
    assert!(message.contains("needs commands = {"), "{message}");
    let (line, col, message) = error(&command("commands = {}\n"));
    assert_eq!((line, col), (5, 12));
    assert!(
        message.starts_with("commands must allow at least one command"),
        "{message}"
    );
    let (line, col, message) = error(&command("commands = { date = [] }\n"));
    assert_eq!((line, col), (5, 21));
    assert!(
        message.starts_with("commands.date must not be empty"),
        "{message}"
    );
    let (line, col, message) = error(&command("commands = { ls = { args = true } }\n"));
    assert_eq!((line, col), (5, 19));
    assert!(
        message.contains("missing required key \"argv\" in commands.ls"),
        "{message}"
    );
    let (_, _, message) = error(&command(
        "commands = { ls = { argv = [\"/bin/ls\"], argz = true } }\n",
    ));
    assert!(
        message.starts_with("unknown key \"argz\" in commands.ls"),
        "{message}"
    );
    let (_, _, message) = error(&command("commands = { \"l s\" = [\"/bin/ls\"] }\n"));
    assert!(message.contains("a command name is one word"), "{message}");
    let (_, _, message) = error(&command(
        "commands = { date = [\"/bin/date\"] }\ntimeout = \"0s\"\n",
    ));
    assert!(
        message.starts_with("timeout must be more than 0s"),
        "{message}"
    );
}

#[test]
fn command_entries_with_and_without_arguments_parse() {
    let config = super::parse(&service(&format!(
        "{LISTEN}handler = \"command\"\ncommands = {{ date = [\"/bin/date\", \"-u\"], ls = {{ argv = [\"/bin/ls\"], args = true }} }}\nmax_output = \"4KiB\"\n"
    )));
    let s = &config.services[0];
    assert_eq!(s.commands["date"].argv, ["/bin/date", "-u"]);
    assert!(!s.commands["date"].args);
    assert!(s.commands["ls"].args);
    assert_eq!(s.timeout, std::time::Duration::from_secs(10));
    assert_eq!(s.max_output, 4096);
}

#[test]
fn ftp_timings_have_defaults_and_reads_hold_a_whole_request() {
    let config = super::parse(&service(&format!(
        "{LISTEN}handler = \"ftp\"\nroot = \"/srv\"\nupload_quiet = \"1s\"\n"
    )));
    let s = &config.services[0];
    assert_eq!(s.pause, std::time::Duration::from_millis(100));
    assert_eq!(s.upload_quiet, std::time::Duration::from_secs(1));
    let text = service(&format!(
        "{LISTEN}handler = \"ftp\"\nroot = \"/srv\"\nmax_line = 100\n"
    ));
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (6, 12));
    assert!(message.contains("max_line must be at least"), "{message}");
    let (line, col, message) = error(&service(&format!(
        "{LISTEN}handler = \"ftp\"\nroot = \"/srv\"\npause = \"soon\"\n"
    )));
    assert_eq!((line, col), (6, 9));
    assert!(
        message.contains("bad duration \"soon\" for pause"),
        "{message}"
    );
    let (_, _, message) = error(&service(&format!("{LISTEN}handler = \"ftp\"\n")));
    assert!(
        message.contains("handler = \"ftp\" needs root"),
        "{message}"
    );
}

#[test]
fn chat_keys_are_checked_where_they_are_written() {
    let chat = |rest: &str| {
        service(&format!(
            "listen = [\"udp://127.0.0.1:9999\"]\nhandler = \"chat\"\n{rest}"
        ))
    };
    let (line, col, message) = error(&chat("max_members = 0\n"));
    assert_eq!((line, col), (5, 15));
    assert_eq!(message, "max_members must be at least 1, not 0");
    let (line, col, message) = error(&chat("max_members = 100000\n"));
    assert_eq!((line, col), (5, 15));
    assert_eq!(message, "max_members must be at most 65536, not 100000");
    let (line, col, message) = error(&chat("member_timeout = \"soon\"\n"));
    assert_eq!((line, col), (5, 18));
    assert!(
        message.starts_with("bad duration \"soon\" for member_timeout"),
        "{message}"
    );
    let config = super::parse(&chat(""));
    let s = &config.services[0];
    assert_eq!(
        (s.max_members, s.member_timeout),
        (1024, std::time::Duration::from_secs(600))
    );
    let config = super::parse(&chat("max_members = 3\nmember_timeout = \"300ms\"\n"));
    let s = &config.services[0];
    assert_eq!(
        (s.max_members, s.member_timeout),
        (3, std::time::Duration::from_millis(300))
    );
}

#[test]
fn http_keys_default_by_mode_and_point_at_bad_values() {
    let http = |mode: &str, extra: &str| {
        format!("[[service]]\nname = \"www\"\n{LISTEN}handler = \"http\"\nroot = \"/srv\"\nmode = \"{mode}\"\n{extra}")
    };
    let event = super::parse(&http("event", ""));
    let s = &event.services[0];
    assert!(!s.follow_symlinks);
    assert_eq!(s.max_requests_per_connection, 1000);
    assert_eq!(s.keepalive_timeout, std::time::Duration::from_secs(75));
    let prefork = super::parse(&http("prefork", "follow_symlinks = true\n"));
    assert!(prefork.services[0].follow_symlinks);
    assert_eq!(
        prefork.services[0].keepalive_timeout,
        std::time::Duration::from_secs(5)
    );
    let (line, col, message) = error(&http("fork", "max_requests_per_connection = 0\n"));
    assert_eq!((line, col), (7, 31));
    assert!(message.contains("at least 1"), "{message}");
    let (line, col, message) = error(&http("fork", "keepalive_timeout = \"soon\"\n"));
    assert_eq!((line, col), (7, 21));
    assert!(message.contains("keepalive_timeout"), "{message}");
}

#[test]
fn a_key_of_another_handler_is_an_error_at_the_key() {
    let text = service(&format!(
        "{LISTEN}handler = \"echo\"\ncommands = {{ date = [\"/bin/date\"] }}\n"
    ));
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (5, 12));
    assert_eq!(
        message,
        "commands is read only by handler = \"command\"; this service's handler = \"echo\" would ignore it"
    );
    let (_, _, message) = error(&service(&format!(
        "{LISTEN}handler = \"files\"\nroot = \"/srv\"\nkeepalive_timeout = \"5s\"\n"
    )));
    assert!(
        message.starts_with("keepalive_timeout is read only by handler = \"http\";"),
        "{message}"
    );
    let (_, _, message) = error(&service(&format!(
        "{LISTEN}handler = \"echo\"\nroot = \"/srv\"\n"
    )));
    assert!(
        message.starts_with("root is read only by handler = \"files\", \"ftp\" or \"http\";"),
        "{message}"
    );
}

#[test]
fn a_read_only_group_that_is_also_the_control_group_is_refused_at_the_key() {
    let (line, col, message) =
        error("[daemon]\ncontrol_group = \"ops\"\ncontrol_read_group = \"ops\"\n");
    assert_eq!((line, col), (3, 22));
    assert!(
        message.starts_with("control_read_group names the same group as control_group"),
        "{message}"
    );
}

#[test]
fn cgroup_is_auto_off_or_an_absolute_path() {
    let (line, col, message) = error("[daemon]\ncgroup = \"forkd\"\n");
    assert_eq!((line, col), (2, 10));
    assert!(
        message
            .starts_with("bad cgroup \"forkd\": expected \"auto\", \"off\" or the absolute path"),
        "{message}"
    );
    let path = Path::new("forkd.toml");
    let config = Config::parse("[daemon]\ncgroup = \"/sys/fs/cgroup/forkd\"\n", path).unwrap();
    assert_eq!(
        config.daemon.cgroup,
        crate::config::CgroupSetting::Path("/sys/fs/cgroup/forkd".into())
    );
}

#[test]
fn metrics_listen_is_a_tcp_or_unix_stream_address() {
    let (line, col, message) = error("[daemon]\nmetrics_listen = \"udp://127.0.0.1:9464\"\n");
    assert_eq!((line, col), (2, 18));
    assert!(
        message.starts_with("bad metrics_listen \"udp://127.0.0.1:9464\": metrics are served over HTTP on a stream socket"),
        "{message}"
    );
    let (_, _, message) = error("[daemon]\nmetrics_listen = \"127.0.0.1:9464\"\n");
    assert!(message.contains("use tcp://HOST:PORT"), "{message}");
    let path = Path::new("forkd.toml");
    let config = Config::parse(
        "[daemon]\nmetrics_listen = \"tcp://127.0.0.1:9464\"\n",
        path,
    )
    .unwrap();
    assert_eq!(
        config.daemon.metrics_listen,
        Some(crate::config::ListenAddr::Tcp(
            "127.0.0.1:9464".parse().unwrap()
        ))
    );
}
