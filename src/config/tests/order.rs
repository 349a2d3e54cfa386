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

#[test]
fn after_names_programs_only_and_not_itself() {
    let pool = "[[pool]]\nname = \"upper\"\nworker = \"builtin:upper\"\n";
    let (_, _, message) = error(&[program("api", "after = [\"upper\"]\n"), pool.into()].concat());
    assert!(message.contains("the pool \"upper\""), "{message}");
    let (_, _, message) = error(&program("api", "after = [\"api\"]\n"));
    assert!(message.contains("lists itself"), "{message}");
}

#[test]
fn a_bad_ready_value_says_what_is_allowed() {
    let (line, col, message) = error(&program("db", "ready = \"udp://127.0.0.1:1\"\n"));
    assert_eq!((line, col), (4, 9));
    assert!(message.contains("\"started\", \"notify\""), "{message}");
}
