//! `after`, `ready`, `ready_after` and `fatal_retry`: defaults, and the
//! start-order errors at the `after` entry that causes them.

use super::{error, parse};
use crate::config::Ready;

fn program(name: &str, extra: &str) -> String {
    format!("[[program]]\nname = \"{name}\"\ncommand = [\"/bin/{name}\"]\n{extra}")
}

#[test]
fn order_keys_have_their_defaults_and_parse_each_ready_kind() {
    let c = parse(&program("db", ""));
    let db = &c.programs[0];
    assert!(db.after.is_empty());
    assert_eq!(db.ready, Ready::Started);
    assert_eq!(db.ready_after, std::time::Duration::from_secs(1));
    assert_eq!(db.fatal_retry, None);
    let text = [
        program(
            "db",
            "ready = \"tcp://127.0.0.1:5432\"\nfatal_retry = \"5m\"\n",
        ),
        program("cache", "ready = \"unix:/run/cache.sock\"\n"),
        program(
            "api",
            "after = [\"db\", \"cache\", \"db\"]\nready = \"notify\"\n",
        ),
    ]
    .concat();
    let c = parse(&text);
    assert_eq!(
        c.programs[0].ready,
        Ready::Tcp("127.0.0.1:5432".parse().unwrap())
    );
    assert_eq!(
        c.programs[0].fatal_retry,
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(c.programs[1].ready, Ready::Unix("/run/cache.sock".into()));
    assert_eq!(c.programs[2].after, ["db", "cache"]);
    assert_eq!(c.programs[2].ready, Ready::Notify);
}

#[test]
fn an_unknown_name_in_after_is_an_error_at_the_entry() {
    let text = [
        program("db", ""),
        program("api", "after = [\"db\", \"dbb\"]\n"),
    ]
    .concat();
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (7, 16));
    assert!(
        message.contains("\"dbb\", which is no [[program]]"),
        "{message}"
    );
    assert!(message.contains("did you mean \"db\""), "{message}");
}

#[test]
fn a_start_order_cycle_is_an_error_naming_its_programs() {
    let text = [
        program("a", "after = [\"b\"]\n"),
        program("b", "after = [\"c\"]\n"),
        program("c", "after = [\"a\"]\n"),
    ]
    .concat();
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (12, 10));
    assert!(
        message.contains("start order cycle: a → b → c → a"),
        "{message}"
    );
}

fn pool(name: &str, extra: &str) -> String {
    format!("[[pool]]\nname = \"{name}\"\nworker = \"builtin:upper\"\n{extra}")
}

#[test]
fn after_names_programs_and_pools_but_not_services_or_itself() {
    let service =
        "[[service]]\nname = \"echo\"\nlisten = [\"tcp://127.0.0.1:1\"]\nhandler = \"echo\"\n";
    let (_, _, message) = error(&[program("api", "after = [\"echo\"]\n"), service.into()].concat());
    assert!(message.contains("the service \"echo\""), "{message}");
    let (_, _, message) = error(&program("api", "after = [\"api\"]\n"));
    assert!(message.contains("lists itself"), "{message}");
    let (_, _, message) = error(&pool("upper", "after = [\"upper\"]\n"));
    assert!(
        message.contains("[[pool]] \"upper\" lists itself"),
        "{message}"
    );
    let c = parse(
        &[
            program("db", ""),
            pool("upper", "after = [\"db\"]\n"),
            program("api", "after = [\"upper\"]\n"),
        ]
        .concat(),
    );
    assert_eq!(c.pools[0].after, ["db"]);
    assert_eq!(c.programs[1].after, ["upper"]);
    assert!(parse(&pool("upper", "")).pools[0].after.is_empty());
}

#[test]
fn a_cycle_across_a_program_and_a_pool_is_an_error_at_its_entry() {
    let text = [
        program("api", "after = [\"upper\"]\n"),
        pool("upper", "after = [\"api\"]\n"),
    ]
    .concat();
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (8, 10));
    assert!(
        message.contains("start order cycle: api → upper → api"),
        "{message}"
    );
}

#[test]
fn an_unknown_name_in_a_pool_after_is_an_error_at_the_entry() {
    let text = [program("db", ""), pool("upper", "after = [\"dbb\"]\n")].concat();
    let (line, col, message) = error(&text);
    assert_eq!((line, col), (7, 10));
    assert!(
        message.contains("\"dbb\", which is no [[program]]"),
        "{message}"
    );
    assert!(message.contains("did you mean \"db\""), "{message}");
}

#[test]
fn a_bad_ready_value_says_what_is_allowed() {
    let (line, col, message) = error(&program("db", "ready = \"udp://127.0.0.1:1\"\n"));
    assert_eq!((line, col), (4, 9));
    assert!(message.contains("\"started\", \"notify\""), "{message}");
}
