//! `command`: the classic remote shell, made safe. Each read is one command
//! line (at most [`MAX_COMMAND_LINE`] bytes: the classic client sends a line
//! in one write and waits for the answer); its first word must name an
//! entry of the service's `commands`, whose argv runs, through
//! `process::ExecPlan`, never through a shell. Further words are appended
//! as arguments only where the entry says `args = true`, and even there a
//! word with a shell metacharacter is refused, so a client who expects
//! `;` or `|` to work is told they do not rather than surprised.
//!
//! Every line is answered with one frame: `HLEN` (i32, little-endian), the
//! header `{"data_size": N}`, then N bytes: the command's stdout, then its
//! stderr, then a note if it timed out or was cut at `max_output`. A line
//! that is refused gets a frame whose body says why; the connection goes
//! on with the next line until EOF, except after a line over the limit:
//! that refusal is followed by EOF (a lingering close drops the rest). Each line's command runs in the
//! connection's own process, which waits for it, so there is no `event`
//! mode (the handlers' table says so).

mod run;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use self::run::{Captured, End};
use super::{linger, Connection, Context, Handler, HandlerError, Limits, Outcome, Session};
use crate::config::AllowedCommand;
use crate::process::{exec::child_environment, Prepared};

/// The longest command line read: the classic client's one `recv(1024)`.
pub const MAX_COMMAND_LINE: usize = 1024;

/// Characters a shell would give a meaning; forkd runs none, so an
/// argument holding one is refused instead of passed on literally.
const SHELL_CHARACTERS: &str = ";|&$`<>(){}[]*?~!#'\"\\";

/// The command handler: its allow-list, each entry prepared once.
#[derive(Debug)]
pub struct Commands {
    entries: BTreeMap<String, Entry>,
    environment: Vec<(String, String)>,
    timeout: Duration,
    max_output: usize,
}

#[derive(Debug)]
struct Entry {
    allowed: AllowedCommand,
    /// The argv as configured, for a line without arguments.
    prepared: Prepared,
}

impl Commands {
    pub fn new(context: &Context<'_>) -> Result<Commands, HandlerError> {
        let config = context.service;
        if config.commands.is_empty() {
            return Err(HandlerError::Setup(format!(
                "service \"{}\": handler = \"command\" needs commands = {{ NAME = [...] }}",
                config.name
            )));
        }
        let environment = child_environment(std::iter::empty());
        let mut entries = BTreeMap::new();
        for (name, allowed) in &config.commands {
            let prepared = Prepared::new(&allowed.argv, &environment).map_err(|e| {
                HandlerError::Setup(format!("service \"{}\": commands.{name}: {e}", config.name))
            })?;
            let allowed = allowed.clone();
            entries.insert(name.clone(), Entry { allowed, prepared });
        }
        Ok(Commands {
            entries,
            environment,
            timeout: config.timeout,
            max_output: usize::try_from(config.max_output).unwrap_or(usize::MAX),
        })
    }

    /// The frame's body for one command line.
    fn answer(&self, line: &[u8]) -> Vec<u8> {
        let request = match parse(line, &self.entries, |e| e.allowed.args) {
            Ok(request) => request,
            Err(refusal) => return self.refusal_body(&refusal),
        };
        let entry = &self.entries[request.name];
        let plan = if request.args.is_empty() {
            Ok(entry.prepared.plan())
        } else {
            let mut argv = entry.allowed.argv.clone();
            argv.extend(request.args.iter().map(|a| a.to_string()));
            Prepared::new(&argv, &self.environment).map(|p| p.plan())
        };
        match plan.and_then(|plan| run::run(plan, self.timeout, self.max_output)) {
            Ok(captured) => self.output_body(captured),
            Err(e) => format!("forkd: cannot run \"{}\": {e}\n", request.name).into_bytes(),
        }
    }

    fn refusal_body(&self, refusal: &Refusal<'_>) -> Vec<u8> {
        let names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        format!("forkd: {refusal}; allowed: {}\n", names.join(", ")).into_bytes()
    }

    fn output_body(&self, captured: Captured) -> Vec<u8> {
        let Captured {
            mut stdout,
            stderr,
            end,
        } = captured;
        stdout.extend_from_slice(&stderr);
        let note = match end {
            End::Finished => return stdout,
            End::TimedOut => format!(
                "\nforkd: timed out after {:?}; the command was killed\n",
                self.timeout
            ),
            End::Cut => format!(
                "\nforkd: output cut at {} bytes (max_output); the command was killed\n",
                self.max_output
            ),
        };
        stdout.extend_from_slice(note.as_bytes());
        stdout
    }
}

/// A line the allow-list accepts: the entry's name and the extra words.
#[derive(Debug, PartialEq, Eq)]
struct Request<'l> {
    name: &'l str,
    args: Vec<&'l str>,
}

/// Why a command line is not run; the text is the reply's.
#[derive(Debug, PartialEq, Eq)]
enum Refusal<'l> {
    TooLong,
    NotText,
    Control,
    Empty,
    Unknown(&'l str),
    NoArguments(&'l str),
    Shell(&'l str),
}

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLong => write!(f, "command line over {MAX_COMMAND_LINE} bytes"),
            Refusal::NotText => write!(f, "the command line is not UTF-8 text"),
            Refusal::Control => write!(f, "the command line holds a control character"),
            Refusal::Empty => write!(f, "empty command line"),
            Refusal::Unknown(name) => write!(f, "unknown command \"{name}\""),
            Refusal::NoArguments(name) => write!(f, "\"{name}\" takes no arguments here"),
            Refusal::Shell(word) => write!(
                f,
                "refused \"{word}\": forkd runs no shell, so {SHELL_CHARACTERS} mean nothing here"
            ),
        }
    }
}

/// Splits one line into an allowed entry and its arguments. One trailing
/// line end is dropped; the words are separated by spaces and tabs.
fn parse<'l, E>(
    line: &'l [u8],
    entries: &BTreeMap<String, E>,
    takes_args: impl Fn(&E) -> bool,
) -> Result<Request<'l>, Refusal<'l>> {
    if line.len() > MAX_COMMAND_LINE {
        return Err(Refusal::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| Refusal::NotText)?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Refusal::Control);
    }
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let name = words.next().ok_or(Refusal::Empty)?;
    let entry = entries.get(name).ok_or(Refusal::Unknown(name))?;
    let args: Vec<&str> = words.collect();
    if !args.is_empty() && !takes_args(entry) {
        return Err(Refusal::NoArguments(name));
    }
    if let Some(word) = args
        .iter()
        .find(|w| w.chars().any(|c| SHELL_CHARACTERS.contains(c)))
    {
        return Err(Refusal::Shell(word));
    }
    Ok(Request { name, args })
}

/// `HLEN | {"data_size": N} | body`, as one buffer for one write.
fn frame(body: &[u8]) -> Vec<u8> {
    // Python's json.dumps spacing, as the classic server wrote it.
    let header = format!("{{\"data_size\": {}}}", body.len());
    let hlen = i32::try_from(header.len()).expect("a short header");
    let mut out = Vec::with_capacity(4 + header.len() + body.len());
    out.extend_from_slice(&hlen.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

impl Handler for Commands {
    fn name(&self) -> &'static str {
        "command"
    }

    fn session(&self) -> Option<Box<dyn Session>> {
        None
    }

    /// One read, one command, one frame, until EOF. A line over the limit
    /// is answered, then the connection closes (lingering, [`linger`]):
    /// where its rest ends, and so where the next line starts, is unknown.
    fn serve(&self, mut conn: Connection, limits: &Limits) -> Outcome {
        if let Err(e) = conn
            .stream
            .set_timeouts(limits.idle_timeout, limits.request_timeout)
        {
            return Outcome::of_error(&e);
        }
        let mut line = [0u8; MAX_COMMAND_LINE + 1];
        loop {
            let n = match conn.stream.read(&mut line) {
                Ok(0) => return Outcome::Done,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Outcome::Done,
                Err(e) => return Outcome::of_error(&e),
            };
            if let Err(e) = conn.stream.write_all(&frame(&self.answer(&line[..n]))) {
                return Outcome::of_error(&e);
            }
            if n > MAX_COMMAND_LINE {
                // The rest of the line is likely still arriving: close
                // without a reset that could cost the client the refusal.
                linger(&conn.stream);
                return Outcome::Failed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `date` takes no arguments, `ls` does.
    fn entries() -> BTreeMap<String, bool> {
        [("date".to_string(), false), ("ls".to_string(), true)].into()
    }

    fn parsed(line: &str) -> Result<Request<'_>, Refusal<'_>> {
        parse(line.as_bytes(), &entries(), |takes| *takes)
    }

    #[test]
    fn the_first_word_selects_an_entry_and_the_rest_are_arguments_where_allowed() {
        let request = parsed("ls  -l\t/tmp\r\n").unwrap();
        assert_eq!(request.name, "ls");
        assert_eq!(request.args, ["-l", "/tmp"]);
        assert_eq!(parsed("date\n").unwrap().args, Vec::<&str>::new());
        assert_eq!(parsed("date -u"), Err(Refusal::NoArguments("date")));
    }

    #[test]
    fn shell_syntax_is_never_a_command_and_never_an_argument() {
        assert_eq!(parsed("ls; rm -rf /"), Err(Refusal::Unknown("ls;")));
        assert_eq!(parsed("ls ; rm -rf /"), Err(Refusal::Shell(";")));
        assert_eq!(parsed("ls $(id)"), Err(Refusal::Shell("$(id)")));
        assert_eq!(parsed("ls a|b"), Err(Refusal::Shell("a|b")));
        assert_eq!(parsed("rm -rf /"), Err(Refusal::Unknown("rm")));
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert_eq!(parsed("   \n"), Err(Refusal::Empty));
        assert_eq!(parsed("ls\nrm"), Err(Refusal::Control));
        assert_eq!(parsed("ls a\0b"), Err(Refusal::Control));
        let long = "ls ".to_string() + &"a".repeat(MAX_COMMAND_LINE);
        assert_eq!(parsed(&long), Err(Refusal::TooLong));
        let bytes = parse(b"ls \xff", &entries(), |t| *t);
        assert_eq!(bytes, Err(Refusal::NotText));
    }

    #[test]
    fn a_frame_is_the_length_the_json_header_and_the_body() {
        let out = frame(b"hi\n");
        let header = br#"{"data_size": 3}"#;
        assert_eq!(out[..4], (header.len() as i32).to_le_bytes());
        assert_eq!(&out[4..4 + header.len()], header);
        assert_eq!(&out[4 + header.len()..], b"hi\n");
    }
}
