//! Socket activation (sd_listen_fds(3)): the listening sockets systemd
//! opened for forkd, found by the names of `FileDescriptorName=`.
//!
//! systemd passes them as fds 3, 4, … with `LISTEN_PID` (forkd's pid),
//! `LISTEN_FDS` (how many) and `LISTEN_FDNAMES` (colon-separated names,
//! "unknown" when the unit sets none). forkd reads them once in `main`,
//! before it opens anything else, takes ownership (`OwnedFd`), marks them
//! close-on-exec so no program inherits them, and removes the variables.
//!
//! A `listen = ["systemd:NAME"]` entry looks its socket up with
//! [`Inherited::take`]: by name first; a NAME that is a decimal number N
//! and names no socket takes the N-th socket passed (0 is fd 3), for units
//! without `FileDescriptorName=`. Several sockets may share a name (a
//! `.socket` unit with two `ListenStream=` lines names both); each `take`
//! hands out the next one. Sockets nobody took are reported as warnings
//! and kept open, so a later reload can still use them.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;

/// One socket systemd passed.
#[derive(Debug)]
struct Entry {
    number: RawFd,
    name: String,
    /// `None` once a listener took it.
    fd: Option<OwnedFd>,
}

/// The sockets forkd inherited by socket activation.
#[derive(Debug, Default)]
pub struct Inherited {
    entries: Vec<Entry>,
}

impl Inherited {
    /// Reads and removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`,
    /// and takes ownership of the fds they describe. Empty when forkd was
    /// not socket-activated; an error (with nothing inherited) when the
    /// variables are malformed or name fds that are not open.
    ///
    /// Call first thing in `main`: before any other fd is opened (so fd 3
    /// and up are still systemd's) and while single-threaded.
    pub fn from_env() -> Result<Inherited, String> {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        let names = parse(
            pid.as_deref(),
            fds.as_deref(),
            names.as_deref(),
            std::process::id(),
        )?;
        let mut entries = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            let number = FIRST_FD + i as RawFd;
            // F_GETFD fails with EBADF when the fd is not open: then the
            // variables lie, and taking ownership would be wrong.
            // SAFETY: F_GETFD only reads the fd's flags; on a closed fd it
            // fails with EBADF and touches nothing.
            if unsafe { libc::fcntl(number, libc::F_GETFD) } < 0 {
                return Err(format!(
                    "socket activation: LISTEN_FDS names fd {number} (\"{name}\"), but it is not open ({}); \
                     ignoring every inherited fd",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: the fd is open (F_GETFD succeeded) and, by the
            // sd_listen_fds protocol with LISTEN_PID == our pid, belongs to
            // this process and to nothing else in it: it is read once, in
            // main, before forkd opens any fd of its own.
            let fd = unsafe { OwnedFd::from_raw_fd(number) };
            fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| {
                format!("socket activation: cannot mark fd {number} close-on-exec: {e}")
            })?;
            entries.push(Entry {
                number,
                name,
                fd: Some(fd),
            });
        }
        Ok(Inherited { entries })
    }

    /// True when systemd passed no socket.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names passed, in fd order (duplicates included).
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// Takes the next unused socket called `name` (or, when no socket has
    /// that name and `name` is a number N, the N-th socket passed).
    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        self.take_or_explain(name).ok()
    }

    /// Like [`take`](Self::take), but says what is wrong when nothing
    /// matches: which names exist, or that the match is already in use.
    pub fn take_or_explain(&mut self, name: &str) -> Result<OwnedFd, String> {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.name == name && e.fd.is_some())
        {
            return Ok(e.fd.take().expect("checked above"));
        }
        let named = self.entries.iter().any(|e| e.name == name);
        if !named {
            if let Ok(index) = name.parse::<usize>() {
                if let Some(e) = self.entries.get_mut(index) {
                    if let Some(fd) = e.fd.take() {
                        return Ok(fd);
                    }
                    return Err(format!(
                        "socket activation: fd {} (index {index}) is already used by another listener",
                        e.number
                    ));
                }
            }
        }
        if named {
            return Err(format!(
                "socket activation: every fd named \"{name}\" is already used by another listener; \
                 add a ListenStream= with FileDescriptorName={name} to the .socket unit, or listen on it once"
            ));
        }
        if self.entries.is_empty() {
            return Err(format!(
                "socket activation: listen = \"systemd:{name}\", but forkd was not socket-activated \
                 (LISTEN_FDS is unset); start it through its .socket unit or use tcp:// or unix:"
            ));
        }
        Err(format!(
            "socket activation: no fd named \"{name}\"; systemd passed {}; \
             set FileDescriptorName={name} in the .socket unit or fix the listen entry",
            self.describe()
        ))
    }

    /// Returns a socket taken by [`take`](Self::take) to the first entry
    /// called `name` that has none (a reload that was rejected, or a
    /// service that was removed), so a later reload can take it again.
    /// A socket no entry is waiting for is closed.
    pub fn give_back(&mut self, name: &str, fd: OwnedFd) {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.name == name && e.fd.is_none())
        {
            e.fd = Some(fd);
            return;
        }
        // `systemd:N` took the N-th socket when no socket is called N.
        if !self.entries.iter().any(|e| e.name == name) {
            if let Some(e) = name
                .parse::<usize>()
                .ok()
                .and_then(|i| self.entries.get_mut(i))
            {
                if e.fd.is_none() {
                    e.fd = Some(fd);
                }
            }
        }
    }

    /// A closure for code that opens listeners and takes a lookup
    /// (`&mut dyn FnMut(&str) -> Option<OwnedFd>`).
    pub fn lookup(&mut self) -> impl FnMut(&str) -> Option<OwnedFd> + '_ {
        move |name| self.take(name)
    }

    /// `socket activation: 2 fds: web (fd 3), admin (fd 4)`, or `None`.
    pub fn summary(&self) -> Option<String> {
        match self.entries.len() {
            0 => None,
            1 => Some(format!("socket activation: 1 fd: {}", self.describe())),
            n => Some(format!("socket activation: {n} fds: {}", self.describe())),
        }
    }

    /// One warning per socket no listener took.
    pub fn unused(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.fd.is_some())
            .map(|e| {
                format!(
                    "socket activation: fd {} named \"{}\" was not used by any service \
                     (add listen = [\"systemd:{}\"] to a [[service]], or remove it from the .socket unit)",
                    e.number, e.name, e.name
                )
            })
            .collect()
    }

    fn describe(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{} (fd {})", e.name, e.number))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// For tests: sockets as if systemd had passed them, named in order.
    pub fn from_fds(fds: Vec<(String, OwnedFd)>) -> Inherited {
        let entries = fds
            .into_iter()
            .enumerate()
            .map(|(i, (name, fd))| Entry {
                number: FIRST_FD + i as RawFd,
                name,
                fd: Some(fd),
            })
            .collect();
        Inherited { entries }
    }
}

/// The names of the fds passed to `my_pid` (fd 3 first), from the values of
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`. Empty when the
/// variables are unset or meant for another process (they leaked from a
/// parent); an error when they are malformed.
pub fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    my_pid: u32,
) -> Result<Vec<String>, String> {
    let Some(fds) = fds else {
        return Ok(Vec::new());
    };
    let Some(pid) = pid else {
        return Err(format!(
            "socket activation: LISTEN_FDS={fds} but LISTEN_PID is unset; ignoring the inherited fds"
        ));
    };
    let pid: u32 = pid.parse().map_err(|_| {
        format!("socket activation: LISTEN_PID={pid:?} is not a pid; ignoring the inherited fds")
    })?;
    if pid != my_pid {
        return Ok(Vec::new());
    }
    let count: usize = fds.parse().map_err(|_| {
        format!("socket activation: LISTEN_FDS={fds:?} is not a count; ignoring the inherited fds")
    })?;
    match names {
        None => Ok(vec!["unknown".to_string(); count]),
        Some(names) => {
            let names: Vec<String> = if count == 0 {
                Vec::new()
            } else {
                names.split(':').map(str::to_string).collect()
            };
            if names.len() != count {
                return Err(format!(
                    "socket activation: LISTEN_FDNAMES has {} name(s) for LISTEN_FDS={count}; \
                     ignoring the inherited fds",
                    names.len()
                ));
            }
            Ok(names)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 4242;

    fn socket() -> OwnedFd {
        std::os::unix::net::UnixDatagram::unbound().unwrap().into()
    }

    #[test]
    fn a_socket_given_back_can_be_taken_again() {
        let mut inherited = Inherited::from_fds(vec![("web".into(), socket())]);
        let fd = inherited.take("web").expect("first take");
        assert!(inherited.take("web").is_none());
        inherited.give_back("web", fd);
        assert!(inherited.take("web").is_some());
    }

    #[test]
    fn names_come_in_fd_order() {
        assert_eq!(
            parse(Some("4242"), Some("2"), Some("web:admin"), ME),
            Ok(vec!["web".to_string(), "admin".to_string()])
        );
    }

    #[test]
    fn fds_without_names_are_called_unknown() {
        assert_eq!(
            parse(Some("4242"), Some("2"), None, ME),
            Ok(vec!["unknown".to_string(); 2])
        );
    }

    #[test]
    fn variables_for_another_pid_or_absent_mean_no_socket() {
        assert_eq!(parse(Some("1"), Some("2"), Some("a:b"), ME), Ok(vec![]));
        assert_eq!(parse(None, None, None, ME), Ok(vec![]));
        assert_eq!(parse(Some("4242"), Some("0"), Some(""), ME), Ok(vec![]));
    }

    #[test]
    fn malformed_variables_are_named_in_the_error() {
        let err = parse(Some("4242"), Some("two"), None, ME).unwrap_err();
        assert!(err.contains("LISTEN_FDS=\"two\""), "{err}");
        let err = parse(Some("x"), Some("1"), None, ME).unwrap_err();
        assert!(err.contains("LISTEN_PID=\"x\""), "{err}");
        let err = parse(None, Some("1"), None, ME).unwrap_err();
        assert!(err.contains("LISTEN_PID is unset"), "{err}");
        let err = parse(Some("4242"), Some("2"), Some("web"), ME).unwrap_err();
        assert!(err.contains("1 name(s) for LISTEN_FDS=2"), "{err}");
    }

    #[test]
    fn take_by_name_then_by_index_and_each_fd_once() {
        let mut inherited = Inherited::from_fds(vec![
            ("web".into(), socket()),
            ("web".into(), socket()),
            ("unknown".into(), socket()),
        ]);
        assert!(inherited.take("web").is_some());
        assert!(inherited.take("web").is_some());
        let err = inherited.take_or_explain("web").unwrap_err();
        assert!(err.contains("already used"), "{err}");
        assert!(inherited.take("2").is_some(), "index 2 is fd 5");
        assert!(inherited.take("2").is_none());
        assert!(inherited.unused().is_empty());
    }

    #[test]
    fn a_missing_name_lists_what_systemd_passed() {
        let mut inherited =
            Inherited::from_fds(vec![("web".into(), socket()), ("admin".into(), socket())]);
        let err = inherited.take_or_explain("echo").unwrap_err();
        assert!(err.contains("no fd named \"echo\""), "{err}");
        assert!(err.contains("web (fd 3), admin (fd 4)"), "{err}");
        let err = Inherited::default().take_or_explain("echo").unwrap_err();
        assert!(err.contains("not socket-activated"), "{err}");
    }

    #[test]
    fn unused_fds_are_reported_by_number_and_name() {
        let mut inherited =
            Inherited::from_fds(vec![("web".into(), socket()), ("x".into(), socket())]);
        {
            let mut lookup = inherited.lookup();
            assert!(lookup("web").is_some());
        }
        let unused = inherited.unused();
        assert_eq!(unused.len(), 1);
        assert!(
            unused[0]
                .starts_with("socket activation: fd 4 named \"x\" was not used by any service"),
            "{}",
            unused[0]
        );
        assert_eq!(
            inherited.summary().unwrap(),
            "socket activation: 2 fds: web (fd 3), x (fd 4)"
        );
    }
}
