//! The room fed datagrams by hand: no socket, no clock but the one given.

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The replies as (port, text) pairs, in the order queued; then cleared.
fn sent(out: &mut Replies) -> Vec<(u16, String)> {
    let all = out
        .iter()
        .map(|(to, data)| (to.port(), String::from_utf8_lossy(data).into_owned()))
        .collect();
    out.clear();
    all
}

fn pairs(list: &[(u16, &str)]) -> Vec<(u16, String)> {
    list.iter().map(|(p, t)| (*p, t.to_string())).collect()
}

/// A room with ann (port 1), bob (2) and cat (3) logged in at `t0`.
fn room_of_three(t0: Instant) -> Room {
    let mut room = Room::new(16, Duration::from_secs(60));
    let mut out = Replies::new();
    for (port, name) in [(1, "ann"), (2, "bob"), (3, "cat")] {
        let login = format!("LOGIN {name}");
        assert_eq!(
            room.datagram(addr(port), login.as_bytes(), t0, &mut out),
            Ok(Done::Joined)
        );
    }
    room
}

#[test]
fn requests_split_on_the_first_two_spaces() {
    assert_eq!(parse(b"LOGIN ann"), Ok(Request::Login("ann")));
    assert_eq!(
        parse("CHAT ann hello  there, 你好 ".as_bytes()),
        Ok(Request::Chat {
            name: "ann",
            text: "hello  there, 你好 "
        })
    );
    assert_eq!(
        parse(b"CHAT ann "),
        Ok(Request::Chat {
            name: "ann",
            text: ""
        })
    );
    assert_eq!(parse(b"EXIT ann"), Ok(Request::Exit("ann")));
    assert_eq!(parse(b"LOGIN ann\r\n"), Ok(Request::Login("ann")));
    assert_eq!(parse(b"LOGIN a b"), Ok(Request::Login("a b")));
    for (bad, why) in [
        (&b"LOGIN \xff\xfe"[..], Malformed::NotUtf8),
        (b"login ann", Malformed::UnknownVerb),
        (b"HELLO", Malformed::UnknownVerb),
        (b"", Malformed::UnknownVerb),
        (b"LOGIN", Malformed::MissingName),
        (b"LOGIN ", Malformed::MissingName),
        (b"CHAT  text", Malformed::MissingName),
        (b"EXIT", Malformed::MissingName),
        (b"CHAT ann", Malformed::MissingText),
    ] {
        assert_eq!(parse(bad), Err(why), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn login_answers_the_sender_and_welcomes_it_to_the_others() {
    let t0 = Instant::now();
    let mut room = Room::new(16, Duration::ZERO);
    let mut out = Replies::new();
    room.datagram(addr(1), b"LOGIN ann", t0, &mut out).unwrap();
    assert_eq!(
        sent(&mut out),
        pairs(&[(1, "OK")]),
        "nobody else to welcome"
    );
    room.datagram(addr(2), "LOGIN 小明".as_bytes(), t0, &mut out)
        .unwrap();
    assert_eq!(
        sent(&mut out),
        pairs(&[(2, "OK"), (1, "欢迎 小明 进入聊天室")])
    );
    room.datagram(addr(3), b"LOGIN cat", t0, &mut out).unwrap();
    assert_eq!(
        sent(&mut out),
        pairs(&[
            (3, "OK"),
            (1, "欢迎 cat 进入聊天室"),
            (2, "欢迎 cat 进入聊天室")
        ])
    );
    assert_eq!(room.names().collect::<Vec<_>>(), ["ann", "小明", "cat"]);
}

#[test]
fn chat_reaches_every_member_but_the_sender_byte_for_byte() {
    let t0 = Instant::now();
    let mut room = room_of_three(t0);
    let mut out = Replies::new();
    assert_eq!(
        room.datagram(
            addr(2),
            "CHAT bob hi  all, 大家好 ".as_bytes(),
            t0,
            &mut out
        ),
        Ok(Done::Said)
    );
    assert_eq!(
        sent(&mut out),
        pairs(&[(1, "bob : hi  all, 大家好 "), (3, "bob : hi  all, 大家好 ")])
    );
}

#[test]
fn taken_reserved_and_bad_names_and_a_full_room_get_fail() {
    let t0 = Instant::now();
    let mut room = Room::new(3, Duration::ZERO);
    let mut out = Replies::new();
    room.datagram(addr(1), b"LOGIN ann", t0, &mut out).unwrap();
    out.clear();
    let long = format!("LOGIN {}", "x".repeat(MAX_NAME + 1));
    for (port, login, why) in [
        (2, "LOGIN ann", Refusal::Taken),
        (2, "LOGIN 管理员", Refusal::Reserved),
        (2, "LOGIN 系统管理", Refusal::Reserved),
        (2, "LOGIN a b", Refusal::BadName),
        (2, "LOGIN a\tb", Refusal::BadName),
        (2, long.as_str(), Refusal::BadName),
        (1, "LOGIN ann2", Refusal::OtherName),
    ] {
        assert_eq!(
            room.datagram(addr(port), login.as_bytes(), t0, &mut out),
            Ok(Done::Refused(why)),
            "{login}"
        );
        assert_eq!(sent(&mut out), pairs(&[(port, "FAIL")]), "{login}");
    }
    room.datagram(addr(2), b"LOGIN bob", t0, &mut out).unwrap();
    room.datagram(addr(3), b"LOGIN cat", t0, &mut out).unwrap();
    out.clear();
    assert_eq!(
        room.datagram(addr(4), b"LOGIN dan", t0, &mut out),
        Ok(Done::Refused(Refusal::Full))
    );
    assert_eq!(sent(&mut out), pairs(&[(4, "FAIL")]));
    assert_eq!(room.members(), 3);
    assert_eq!(room.ignored(), 0, "a refusal is an answer, not ignored");
}

#[test]
fn a_repeated_login_is_answered_again_without_a_second_welcome() {
    let t0 = Instant::now();
    let mut room = room_of_three(t0);
    let mut out = Replies::new();
    assert_eq!(
        room.datagram(addr(1), b"LOGIN ann", t0, &mut out),
        Ok(Done::AlreadyIn)
    );
    assert_eq!(sent(&mut out), pairs(&[(1, "OK")]));
}

#[test]
fn exit_removes_the_member_and_tells_the_rest() {
    let t0 = Instant::now();
    let mut room = room_of_three(t0);
    let mut out = Replies::new();
    assert_eq!(
        room.datagram(addr(2), b"EXIT bob", t0, &mut out),
        Ok(Done::Left)
    );
    assert_eq!(
        sent(&mut out),
        pairs(&[(1, "bob 退出聊天室"), (3, "bob 退出聊天室")])
    );
    assert_eq!(room.names().collect::<Vec<_>>(), ["ann", "cat"]);
    room.datagram(addr(9), b"LOGIN bob", t0, &mut out).unwrap();
    assert_eq!(
        room.members(),
        3,
        "the name is free again, from any address"
    );
}

#[test]
fn one_client_cannot_speak_or_leave_as_another_and_is_ignored_and_counted() {
    let t0 = Instant::now();
    let mut room = room_of_three(t0);
    let mut out = Replies::new();
    for (port, datagram) in [
        (1, &b"CHAT bob I am bob"[..]),
        (1, b"EXIT bob"),
        (9, b"CHAT ann from a stranger"),
        (1, b"CHAT nobody hello"),
        (1, b"EXIT nobody"),
        (2, b"EXIT bob trailing"),
    ] {
        assert_eq!(
            room.datagram(addr(port), datagram, t0, &mut out),
            Err(Ignored::NotTheMember),
            "{:?}",
            String::from_utf8_lossy(datagram)
        );
    }
    for datagram in [&b"\xff\xfe"[..], b"PING", b"LOGIN", b"CHAT ann"] {
        assert!(matches!(
            room.datagram(addr(1), datagram, t0, &mut out),
            Err(Ignored::Malformed(_))
        ));
    }
    assert!(out.is_empty(), "nothing ignored is answered");
    assert_eq!(room.ignored(), 10);
    assert_eq!(room.names().collect::<Vec<_>>(), ["ann", "bob", "cat"]);
}

#[test]
fn the_operator_reaches_every_member() {
    let t0 = Instant::now();
    let room = room_of_three(t0);
    let mut out = Replies::new();
    assert_eq!(room.operator(b"hello all", &mut out), 3);
    assert_eq!(
        sent(&mut out),
        pairs(&[
            (1, "管理员消息 : hello all"),
            (2, "管理员消息 : hello all"),
            (3, "管理员消息 : hello all")
        ])
    );
    assert_eq!(MAX_OPERATOR_TEXT + OPERATOR.len(), MAX_DATAGRAM);
}

#[test]
fn silent_members_expire_and_the_others_are_told() {
    let t0 = Instant::now();
    let timeout = Duration::from_secs(60);
    let mut room = room_of_three(t0);
    let mut out = Replies::new();
    assert_eq!(room.deadline(), Some(t0 + timeout));
    let t1 = t0 + Duration::from_secs(30);
    room.datagram(addr(1), b"CHAT ann still here", t1, &mut out)
        .unwrap();
    room.datagram(addr(3), b"LOGIN cat", t1, &mut out).unwrap();
    out.clear();
    assert_eq!(
        room.expire(t0 + timeout - Duration::from_millis(1), &mut out),
        0
    );
    assert_eq!(room.expire(t0 + timeout, &mut out), 1, "bob was silent");
    assert_eq!(
        sent(&mut out),
        pairs(&[(1, "bob 退出聊天室"), (3, "bob 退出聊天室")])
    );
    assert_eq!(room.deadline(), Some(t1 + timeout));
    assert_eq!(room.expire(t1 + timeout, &mut out), 2);
    assert!(room.members() == 0 && room.deadline().is_none());
}

#[test]
fn a_zero_member_timeout_never_expires_anyone() {
    let t0 = Instant::now();
    let mut room = Room::new(4, Duration::ZERO);
    let mut out = Replies::new();
    room.datagram(addr(1), b"LOGIN ann", t0, &mut out).unwrap();
    assert_eq!(room.deadline(), None);
    assert_eq!(room.expire(t0 + Duration::from_secs(1 << 30), &mut out), 0);
    assert_eq!(room.members(), 1);
}
