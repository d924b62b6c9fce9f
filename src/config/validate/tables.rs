//! The validator's part for the tables of the configuration file
//! (`[[stream.destination]]`, `[stream.headers]`, `[[user]]`, `[[mirror]]`,
//! `[channels]`), for passwords, and for what is checked across streams
//! (fallback mounts, the mounts users and `health_mounts` name).
//!
//! Secrets: no message here quotes a password or a channel key (`bad`
//! hides them; the messages written here never include them).

use std::collections::HashSet;
use std::path::Path;

use super::super::raw::{Fault, Given, Layer, Origin, Place, Value};
use super::super::table::Setting;
use super::super::values::{bcrypt_syntax, is_channel_key, is_token, parse_http_url};
use super::super::values::{check_header_value, reserved_header, HttpUrl};
use super::super::{Channels, Destination, Mirror, Role, Secret, StreamConfig, User};
use super::{Check, Mode};

/// Where a password goes: checked by ringcast (a bcrypt hash will do) or
/// sent by it to another server (it must be as written).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Checked,
    Sent,
}

impl Check {
    /// The tables a layer's `s` holds (`[[user]]`, `[channels]`, ...).
    fn tables(layer: &Layer, s: Setting) -> &[Layer] {
        match layer.get(s).map(|g| &g.value) {
            Some(Value::Tables(t)) => t,
            _ => &[],
        }
    }

    /// The stream being read, in file mode.
    fn stream_index(&self) -> Option<usize> {
        match self.place {
            Place::Stream(i) => Some(i),
            _ => None,
        }
    }

    /// A required setting that is missing: reported at its table's header.
    fn missing(&mut self, s: Setting, why: &str) {
        self.report(
            s,
            &Origin::Default,
            Fault::Missing,
            format!("missing: {why}"),
        );
    }

    /// An `http://` URL setting that must not carry credentials (they have
    /// keys of their own there).
    fn url_without_credentials(
        &mut self,
        layer: &Layer,
        s: Setting,
        what: &str,
    ) -> Option<HttpUrl> {
        let Some((text, g)) = self.given_text(layer, s) else {
            if !layer.is_set(s) {
                self.missing(s, what);
            }
            return None;
        };
        match parse_http_url(&text) {
            Ok(u) if u.user.is_some() => {
                let why = "has credentials in it: give them as user and password";
                self.bad(s, &g, Fault::Invalid, why);
                None
            }
            Ok(u) => Some(u),
            Err(why) => {
                self.bad(s, &g, Fault::Invalid, why);
                None
            }
        }
    }

    /// A user name (HTTP Basic): not empty, no `:`, no control characters.
    fn user_name(&mut self, layer: &Layer, s: Setting) -> Option<String> {
        let (name, g) = self.text(layer, s)?;
        let why = if name.is_empty() {
            "must not be empty"
        } else if name.contains(':') {
            "must not contain ':' (HTTP Basic puts it between the user name and the password)"
        } else if name.chars().any(char::is_control) {
            "must not contain control characters"
        } else {
            return Some(name);
        };
        self.bad(s, &g, Fault::Invalid, why);
        None
    }

    /// A password given as `password` or read from the first line of
    /// `password_file` (at every load, so a reload picks up a new one).
    fn secret(
        &mut self,
        layer: &Layer,
        key: Setting,
        file: Setting,
        usage: Use,
        required: bool,
    ) -> Option<Secret> {
        match (layer.get(key).cloned(), layer.get(file).cloned()) {
            (Some(_), Some(f)) => {
                let why = "cannot be used together with password (choose one)";
                self.report(file, &f.origin, Fault::Conflict, why);
                None
            }
            (None, None) => {
                if required {
                    self.missing(
                        key,
                        "password = \"...\" (or password_file = \"/path\" to keep it out of this file)",
                    );
                }
                None
            }
            (Some(g), None) => {
                let text = self.text_of(key, &g)?;
                self.password(key, &g.origin, &text, "", usage)
            }
            (None, Some(g)) => {
                let Value::Text(path) = &g.value else {
                    return None;
                };
                let shown = Path::new(path).display().to_string();
                match std::fs::read(path) {
                    Ok(bytes) => {
                        let Ok(text) = String::from_utf8(bytes) else {
                            let why = format!("{shown:?}: the file is not UTF-8 text");
                            self.report(file, &g.origin, Fault::Invalid, why);
                            return None;
                        };
                        let first = text.lines().next().unwrap_or("");
                        let whose = format!(" (the first line of {shown:?})");
                        self.password(file, &g.origin, first, &whose, usage)
                    }
                    Err(e) => {
                        let why = format!("cannot read {shown:?}: {e}");
                        self.report(file, &g.origin, Fault::Invalid, why);
                        None
                    }
                }
            }
        }
    }

    /// A password's text: a bcrypt hash (for a password ringcast checks)
    /// or the password as written. `whose` names a file it came from.
    fn password(
        &mut self,
        s: Setting,
        origin: &Origin,
        text: &str,
        whose: &str,
        usage: Use,
    ) -> Option<Secret> {
        let why = if text.is_empty() {
            format!("the password{whose} must not be empty")
        } else {
            match (bcrypt_syntax(text), usage) {
                (None, _) => return Some(Secret::Plain(text.to_owned())),
                (Some(Ok(())), Use::Checked) => return Some(Secret::Bcrypt(text.to_owned())),
                (Some(Ok(())), Use::Sent) => format!(
                    "the password{whose} is a bcrypt hash, but ringcast sends this password \
                     to the other server: give it as written"
                ),
                (Some(Err(why)), _) => format!("the password{whose} {why}"),
            }
        };
        self.report(s, origin, Fault::Invalid, why);
        None
    }

    /// `fallback`: a mount (checked against the others in [`Check::fallbacks`]).
    pub(super) fn fallback(&mut self, layer: &Layer) -> Option<String> {
        let (m, g) = self.given_text(layer, Setting::Fallback)?;
        if m.starts_with('/') && !m.contains(['?', '#', ' ']) {
            return Some(m);
        }
        let why = "must be the mount of another stream, e.g. \"/backup.mp3\"";
        self.bad(Setting::Fallback, &g, Fault::Invalid, why);
        None
    }

    /// Each stream's fallback names another stream of the same framer and
    /// content type, and no chain of fallbacks comes back to where it began.
    pub(super) fn fallbacks(&mut self, layers: &[Layer], all: &[(StreamConfig, bool)]) {
        let index_of = |mount: &str| {
            all.iter()
                .position(|(sc, _)| sc.mount.as_deref() == Some(mount))
        };
        // The stream each one falls back to (when it is a sound choice).
        let mut next: Vec<Option<usize>> = vec![None; all.len()];
        for (i, (sc, ok)) in all.iter().enumerate() {
            let (Some(f), Some(g)) = (
                &sc.fallback,
                layers.get(i).and_then(|l| l.get(Setting::Fallback)),
            ) else {
                continue;
            };
            self.place = Place::Stream(i);
            let s = Setting::Fallback;
            if sc.mount.as_ref() == Some(f) {
                self.bad(
                    s,
                    g,
                    Fault::Invalid,
                    "is this stream's own mount: name another",
                );
                continue;
            }
            let Some(t) = index_of(f) else {
                self.bad(s, g, Fault::Invalid, "names no configured mount");
                continue;
            };
            let (target, target_ok) = &all[t];
            if *ok
                && *target_ok
                && (target.framer != sc.framer || target.content_type != sc.content_type)
            {
                let why = format!(
                    "{f} is {:?} ({}), this stream is {:?} ({}): listeners could not play \
                     one after the other (give both the same framer and content_type)",
                    target.framer, target.content_type, sc.framer, sc.content_type
                );
                self.bad(s, g, Fault::Conflict, why);
                continue;
            }
            next[i] = Some(t);
        }
        // A cycle is reported once, at its first stream.
        for (start, layer) in layers.iter().enumerate().take(all.len()) {
            let mut chain = vec![start];
            let mut at = start;
            while let Some(n) = next[at] {
                if n == start {
                    let names: Vec<&str> = chain
                        .iter()
                        .chain(std::iter::once(&start))
                        .map(|&k| all[k].0.mount.as_deref().unwrap_or("?"))
                        .collect();
                    if chain.iter().all(|&k| k >= start) {
                        if let Some(g) = layer.get(Setting::Fallback) {
                            self.place = Place::Stream(start);
                            let why = format!("fallback cycle: {}", names.join(" -> "));
                            self.report(Setting::Fallback, &g.origin, Fault::Conflict, why);
                        }
                    }
                    break;
                }
                if chain.contains(&n) {
                    break; // a cycle that does not pass through start
                }
                chain.push(n);
                at = n;
            }
        }
    }

    /// `[[stream.destination]]`: servers the stream is pushed to as well.
    pub(super) fn destinations(&mut self, layer: &Layer) -> Vec<Destination> {
        let Some(i) = self.stream_index() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (j, d) in Self::tables(layer, Setting::Destinations)
            .iter()
            .enumerate()
        {
            self.place = Place::Destination(i, j);
            let url = self.url_without_credentials(
                d,
                Setting::DestUrl,
                "url = \"http://host:port/mount\"",
            );
            let url = url.and_then(|u| {
                let is_mount = u.path.len() > 1 && !u.path.contains('?');
                if is_mount {
                    return Some(u.without_credentials());
                }
                if let Some(g) = d.get(Setting::DestUrl).cloned() {
                    let why = "needs the mount to push to (http://host[:port]/mount)";
                    self.bad(Setting::DestUrl, &g, Fault::Invalid, why);
                }
                None
            });
            let user = self.user_name(d, Setting::DestUser);
            let password = self.secret(
                d,
                Setting::DestPassword,
                Setting::DestPasswordFile,
                Use::Sent,
                true,
            );
            let legacy_source = self.boolean(d, Setting::DestLegacySource).unwrap_or(false);
            let retry_limit = match d.get(Setting::DestRetryLimit) {
                Some(g) => self
                    .int_of(Setting::DestRetryLimit, g)
                    .and_then(|n| u32::try_from(n).ok()),
                None => None,
            };
            if let (Some(url), Some(user), Some(password)) = (url, user, password) {
                out.push(Destination {
                    url,
                    user,
                    password,
                    legacy_source,
                    retry_limit,
                });
            }
        }
        self.place = Place::Stream(i);
        out
    }

    /// `[stream.headers]`: extra response headers, valid and not ones
    /// ringcast sets itself.
    pub(super) fn headers(&mut self, layer: &Layer) -> Vec<(String, String)> {
        let Some(Value::Pairs(pairs)) = layer.get(Setting::Headers).map(|g| &g.value) else {
            return Vec::new();
        };
        let s = Setting::Headers;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (name, g) in pairs {
            let Some(value) = self.text_of(s, g) else {
                continue;
            };
            let why = if !is_token(name) {
                Some("is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)".to_owned())
            } else if let Some(why) = reserved_header(name) {
                Some(why.to_owned())
            } else if !seen.insert(name.to_ascii_lowercase()) {
                Some("is given twice (header names ignore case)".to_owned())
            } else {
                check_header_value(&value)
                    .err()
                    .map(|why| format!("invalid value {value:?}: {why}"))
            };
            match why {
                Some(why) => self.report(s, &g.origin, Fault::Invalid, why),
                None => out.push((name.clone(), value)),
            }
        }
        out
    }

    /// `health_mounts`: each a configured mount.
    pub(super) fn health_mounts(&mut self, layer: &Layer, mounts: &[String]) -> Vec<String> {
        let s = Setting::HealthMounts;
        let Some(g) = layer.get(s).cloned() else {
            return Vec::new();
        };
        let list = self.strings_of(s, &g).unwrap_or_default();
        let mut out = Vec::new();
        for m in list {
            if mounts.contains(&m) {
                out.push(m);
            } else {
                let one = Given {
                    value: Value::Text(m.into()),
                    origin: g.origin.clone(),
                };
                self.bad(s, &one, Fault::Invalid, "names no configured mount");
            }
        }
        out
    }

    /// `[[user]]`: the credential store.
    pub(super) fn users(&mut self, layer: &Layer, mounts: &[String]) -> Vec<User> {
        let mut out: Vec<(User, usize, Origin)> = Vec::new();
        for (j, u) in Self::tables(layer, Setting::Users).iter().enumerate() {
            self.place = Place::User(j);
            let before = self.problems.len();
            if !u.is_set(Setting::UserName) {
                self.missing(
                    Setting::UserName,
                    "name = \"...\" (the user name of HTTP Basic)",
                );
            }
            let name = self.user_name(u, Setting::UserName);
            let password = self.secret(
                u,
                Setting::UserPassword,
                Setting::UserPasswordFile,
                Use::Checked,
                true,
            );
            let roles = self.roles(u);
            let user_mounts = self.user_mounts(u, mounts);
            let (Some(name), Some(password), Some(roles), Some(user_mounts)) =
                (name, password, roles, user_mounts)
            else {
                continue;
            };
            if self.problems.len() != before {
                continue;
            }
            let origin = u
                .get(Setting::UserName)
                .map_or(Origin::Default, |g| g.origin.clone());
            let overlap = |a: &[String], b: &[String]| {
                a.is_empty() || b.is_empty() || a.iter().any(|m| b.contains(m))
            };
            if let Some((_, k, _)) = out
                .iter()
                .find(|(o, _, _)| o.name == name && overlap(&o.mounts, &user_mounts))
            {
                let why = format!(
                    "user #{} has the same name for some of the same mounts: \
                     give each user name once per mount",
                    k + 1
                );
                self.report(Setting::UserName, &origin, Fault::Conflict, why);
                continue;
            }
            out.push((
                User {
                    name,
                    password,
                    roles,
                    mounts: user_mounts,
                },
                j,
                origin,
            ));
        }
        self.place = Place::Top;
        out.into_iter().map(|(u, _, _)| u).collect()
    }

    fn roles(&mut self, u: &Layer) -> Option<Vec<Role>> {
        let s = Setting::UserRoles;
        let Some(g) = u.get(s).cloned() else {
            self.missing(s, "roles = [\"source\"] (source, admin, relay)");
            return None;
        };
        let names = self.strings_of(s, &g)?;
        if names.is_empty() {
            let why = "needs at least one role: source, admin or relay";
            self.report(s, &g.origin, Fault::Missing, why);
            return None;
        }
        let mut roles = Vec::new();
        let mut ok = true;
        for n in names {
            let role = match n.as_str() {
                "source" => Role::Source,
                "admin" => Role::Admin,
                "relay" => Role::Relay,
                _ => {
                    let one = Given {
                        value: Value::Text(n.into()),
                        origin: g.origin.clone(),
                    };
                    self.bad(s, &one, Fault::Invalid, "a role is source, admin or relay");
                    ok = false;
                    continue;
                }
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        ok.then_some(roles)
    }

    fn user_mounts(&mut self, u: &Layer, mounts: &[String]) -> Option<Vec<String>> {
        let s = Setting::UserMounts;
        let Some(g) = u.get(s).cloned() else {
            return Some(Vec::new());
        };
        let list = self.strings_of(s, &g)?;
        if list.is_empty() {
            let why = "names no mount: leave mounts out for every mount";
            self.report(s, &g.origin, Fault::Missing, why);
            return None;
        }
        let mut ok = true;
        for m in &list {
            if !mounts.contains(m) {
                let one = Given {
                    value: Value::Text(m.into()),
                    origin: g.origin.clone(),
                };
                self.bad(s, &one, Fault::Invalid, "names no configured mount");
                ok = false;
            }
        }
        ok.then_some(list)
    }

    /// `[[mirror]]`: origins whose every mount is relayed.
    pub(super) fn mirrors(&mut self, layer: &Layer) -> Vec<Mirror> {
        let mut out = Vec::new();
        for (j, m) in Self::tables(layer, Setting::Mirrors).iter().enumerate() {
            self.place = Place::Mirror(j);
            let before = self.problems.len();
            let origin = self
                .url_without_credentials(m, Setting::MirrorOrigin, "origin = \"http://host:port\"")
                .and_then(|u| {
                    if u.path.is_empty() || u.path == "/" {
                        return Some(format!("http://{}:{}", bracketed(&u.host), u.port));
                    }
                    if let Some(g) = m.get(Setting::MirrorOrigin).cloned() {
                        let why = "must be the server only, http://host[:port] \
                                   (its /admin/streamlist.txt lists the mounts)";
                        self.bad(Setting::MirrorOrigin, &g, Fault::Invalid, why);
                    }
                    None
                });
            let user = match m.is_set(Setting::MirrorUser) {
                true => self.user_name(m, Setting::MirrorUser),
                false => None,
            };
            let password = self.secret(
                m,
                Setting::MirrorPassword,
                Setting::MirrorPasswordFile,
                Use::Sent,
                m.is_set(Setting::MirrorUser),
            );
            let has_password =
                m.is_set(Setting::MirrorPassword) || m.is_set(Setting::MirrorPasswordFile);
            if has_password && !m.is_set(Setting::MirrorUser) {
                self.missing(
                    Setting::MirrorUser,
                    "user = \"...\" (a password needs its user)",
                );
            }
            let interval = self.duration(m, Setting::MirrorInterval);
            if interval.is_some_and(|d| d.as_secs() < 1) {
                if let Some(g) = self.value(m, Setting::MirrorInterval) {
                    self.bad(
                        Setting::MirrorInterval,
                        &g,
                        Fault::Range,
                        "must be at least 1s",
                    );
                }
            }
            let template = self.stream_config(m, Mode::Mirror);
            if let (Some(origin), Some(interval), true) =
                (origin, interval, self.problems.len() == before)
            {
                out.push(Mirror {
                    origin,
                    user,
                    password,
                    interval,
                    template: Box::new(template),
                });
            }
        }
        self.place = Place::Top;
        out
    }

    /// `[channels]`: WebSocket publish channels.
    pub(super) fn channels(&mut self, layer: &Layer) -> Channels {
        let Some(c) = Self::tables(layer, Setting::Channels).first() else {
            return Channels::off();
        };
        self.place = Place::Channels;
        let max_channels = self.usize(c, Setting::MaxChannels).unwrap_or(0);
        let mut keys = Vec::new();
        if let Some(g) = c.get(Setting::ChannelKeys).cloned() {
            for (k, key) in self
                .strings_of(Setting::ChannelKeys, &g)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                if is_channel_key(&key) {
                    keys.push(Secret::Plain(key));
                } else {
                    // Never quoted: a key is a secret.
                    let why = format!(
                        "key #{} must be 1 to 128 characters of a-z, 0-9, _ and -",
                        k + 1
                    );
                    self.report(Setting::ChannelKeys, &g.origin, Fault::Invalid, why);
                }
            }
        }
        let template = self.stream_config(c, Mode::Channel);
        self.place = Place::Top;
        Channels {
            max_channels,
            keys,
            template: Box::new(template),
        }
    }
}

/// A host for a URL: an IPv6 literal in brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}
