//! The credential store: users with roles (source, admin, relay), per mount
//! or global, from the configuration file's `[[user]]` tables.
//!
//! Passwords are either written as they are or as bcrypt hashes (what
//! `htpasswd -B` writes). Checking a plain password is a constant-time
//! comparison. Checking a bcrypt hash takes tens of milliseconds of CPU,
//! which must never run on a shard: it runs on the store's own thread, and
//! its verdict is cached (under a keyed hash of the presented user and
//! password, never the password itself) so an encoder that reconnects, or a
//! metadata update every few seconds, costs a hash-map lookup.
//!
//! Secrets never leave this module: errors and logs name the user and the
//! mount, never a password.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use base64::Engine as _;

use crate::config::{Role, Secret, User};

/// How long a verdict stays cached.
const CACHE_TTL: Duration = Duration::from_secs(600);
/// Most cached verdicts (the cache is cleared when it grows past this: a
/// flood of wrong passwords cannot grow memory).
const CACHE_MAX: usize = 4096;

/// HTTP Basic credentials as presented.
#[derive(Clone, PartialEq, Eq)]
pub struct Presented {
    /// The user name.
    pub user: String,
    /// The password (never logged: `Debug` hides it).
    pub password: String,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("user", &self.user)
            .field("password", &"<secret>")
            .finish()
    }
}

/// Decode an `Authorization: Basic ...` header value; `None` when it is not
/// Basic or not well formed.
pub fn parse_basic(value: &str) -> Option<Presented> {
    let v = value.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(Presented {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The user exists, the password is right, and the user has the role
    /// for the mount.
    Allowed,
    /// No such user, a wrong password, or not that role for that mount (one
    /// answer for all, so a caller cannot probe for user names).
    Denied,
}

/// Constant-time equality of two byte strings (the time depends on the
/// lengths only).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// One pending bcrypt check.
struct Job {
    hash: String,
    password: String,
    reply: Arc<Reply>,
}

/// Where the store's thread leaves a verdict for a waiting task.
#[derive(Default)]
struct Reply {
    done: AtomicBool,
    ok: AtomicBool,
    waker: AtomicWaker,
}

/// The store.
pub struct Credentials {
    users: Vec<User>,
    /// Verdicts of bcrypt checks by keyed hash of (user, password).
    cache: Mutex<HashMap<u64, (bool, Instant)>>,
    keys: std::collections::hash_map::RandomState,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A store of `users`. The bcrypt thread starts on the first check that
    /// needs it.
    pub fn new(users: Vec<User>) -> Credentials {
        Credentials {
            users,
            cache: Mutex::new(HashMap::new()),
            keys: std::collections::hash_map::RandomState::new(),
            jobs: Mutex::new(None),
        }
    }

    /// True when no user is configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The users with `role` for `mount` (for a relay presenting
    /// credentials to an upstream: the first such user's).
    pub fn users_with<'a>(
        &'a self,
        role: Role,
        mount: &'a str,
    ) -> impl Iterator<Item = &'a User> + 'a {
        self.users
            .iter()
            .filter(move |u| u.roles.contains(&role) && applies(u, mount))
    }

    fn cache_key(&self, p: &Presented) -> u64 {
        let mut h = self.keys.build_hasher();
        p.user.hash(&mut h);
        0u8.hash(&mut h);
        p.password.hash(&mut h);
        h.finish()
    }

    /// Check `p` for `role` on `mount`: at once for plain passwords and
    /// cached verdicts, on the store's thread for a bcrypt hash (the future
    /// then waits without blocking the shard).
    pub fn check(&self, p: &Presented, role: Role, mount: &str) -> Check<'_> {
        let user = self
            .users
            .iter()
            .find(|u| u.name == p.user && u.roles.contains(&role) && applies(u, mount));
        let Some(user) = user else {
            return Check::Ready(Verdict::Denied);
        };
        match &user.password {
            Secret::Plain(pw) => Check::Ready(verdict(constant_time_eq(
                pw.as_bytes(),
                p.password.as_bytes(),
            ))),
            Secret::Bcrypt(hash) => {
                let key = self.cache_key(p);
                if let Some(ok) = self.cached(key) {
                    return Check::Ready(verdict(ok));
                }
                let reply = Arc::new(Reply::default());
                let job = Job {
                    hash: hash.clone(),
                    password: p.password.clone(),
                    reply: reply.clone(),
                };
                if !self.submit(job) {
                    return Check::Ready(Verdict::Denied);
                }
                Check::Pending(Pending {
                    reply,
                    key,
                    store: self,
                })
            }
        }
    }

    fn cached(&self, key: u64) -> Option<bool> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(&key)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(ok, _)| *ok)
    }

    fn remember(&self, key: u64, ok: bool) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (ok, Instant::now()));
        }
    }

    /// Hand a job to the bcrypt thread (started on first use).
    fn submit(&self, job: Job) -> bool {
        let Ok(mut jobs) = self.jobs.lock() else {
            return false;
        };
        if jobs.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("credentials".into())
                .spawn(move || {
                    for job in rx {
                        let ok = bcrypt::verify(&job.password, &job.hash).unwrap_or(false);
                        job.reply.ok.store(ok, Ordering::Relaxed);
                        // Release: the waiter that sees `done` sees `ok`.
                        job.reply.done.store(true, Ordering::Release);
                        job.reply.waker.wake();
                    }
                });
            if spawned.is_err() {
                log::error!("cannot start the credential store's thread");
                return false;
            }
            *jobs = Some(tx);
        }
        jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

fn applies(u: &User, mount: &str) -> bool {
    u.mounts.is_empty() || u.mounts.iter().any(|m| m == mount)
}

fn verdict(ok: bool) -> Verdict {
    if ok {
        Verdict::Allowed
    } else {
        Verdict::Denied
    }
}

/// A check's outcome: now, or later.
pub enum Check<'a> {
    /// Known now.
    Ready(Verdict),
    /// A bcrypt check on the store's thread; await it.
    Pending(Pending<'a>),
}

impl Check<'_> {
    /// The verdict (awaits a pending check).
    pub async fn verdict(self) -> Verdict {
        match self {
            Check::Ready(v) => v,
            Check::Pending(p) => p.await,
        }
    }
}

/// A bcrypt check in progress.
pub struct Pending<'a> {
    reply: Arc<Reply>,
    key: u64,
    store: &'a Credentials,
}

impl Future for Pending<'_> {
    type Output = Verdict;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        // Register first, then look: a verdict stored in between still wakes
        // us (AtomicWaker keeps one waker, so polls never pile up clones).
        self.reply.waker.register(cx.waker());
        if self.reply.done.load(Ordering::Acquire) {
            let ok = self.reply.ok.load(Ordering::Relaxed);
            self.store.remember(self.key, ok);
            return Poll::Ready(verdict(ok));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        futures_lite::future::block_on(f)
    }

    fn user(name: &str, password: Secret, roles: &[Role], mounts: &[&str]) -> User {
        User {
            name: name.into(),
            password,
            roles: roles.to_vec(),
            mounts: mounts.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn presented(user: &str, password: &str) -> Presented {
        Presented {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn basic_headers_are_decoded() {
        // "source:hackme"
        let p = parse_basic("Basic c291cmNlOmhhY2ttZQ==").unwrap();
        assert_eq!(p, presented("source", "hackme"));
        // A password may contain ':'.
        let p = parse_basic("basic dTpwOnE=").unwrap();
        assert_eq!(p, presented("u", "p:q"));
        assert!(parse_basic("Bearer abc").is_none());
        assert!(parse_basic("Basic !!!").is_none());
        assert!(parse_basic("Basic bm9jb2xvbg==").is_none(), "no colon");
        assert!(
            !format!("{p:?}").contains("p:q"),
            "Debug hides the password"
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"hackme", b"hackme"));
        assert!(!constant_time_eq(b"hackme", b"hackmf"));
        assert!(!constant_time_eq(b"hackme", b"hack"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        // Lengths that differ by a multiple of 256 still differ.
        assert!(!constant_time_eq(&[0; 256], &[]));
    }

    #[test]
    fn plain_passwords_roles_and_mounts() {
        let store = Credentials::new(vec![
            user(
                "source",
                Secret::Plain("hackme".into()),
                &[Role::Source],
                &["/live.mp3"],
            ),
            user(
                "admin",
                Secret::Plain("s3cret".into()),
                &[Role::Admin, Role::Source],
                &[],
            ),
        ]);
        let check = |u: &str, p: &str, r: Role, m: &str| {
            block_on(store.check(&presented(u, p), r, m).verdict())
        };
        assert_eq!(
            check("source", "hackme", Role::Source, "/live.mp3"),
            Verdict::Allowed
        );
        assert_eq!(
            check("source", "wrong", Role::Source, "/live.mp3"),
            Verdict::Denied
        );
        assert_eq!(
            check("source", "hackme", Role::Source, "/other"),
            Verdict::Denied,
            "per mount"
        );
        assert_eq!(
            check("source", "hackme", Role::Admin, "/live.mp3"),
            Verdict::Denied,
            "role"
        );
        assert_eq!(
            check("admin", "s3cret", Role::Source, "/anything"),
            Verdict::Allowed,
            "global"
        );
        assert_eq!(
            check("nobody", "hackme", Role::Source, "/live.mp3"),
            Verdict::Denied
        );
        assert_eq!(store.users_with(Role::Source, "/live.mp3").count(), 2);
        assert!(!format!("{store:?}").contains("hackme"));
    }

    #[test]
    fn bcrypt_hashes_are_checked_off_thread_and_cached() {
        // As `htpasswd -B` writes it ($2y$), low cost to keep the test fast.
        let hash = bcrypt::hash_with_result("hackme", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        assert!(hash.starts_with("$2y$04$"));
        let store = Credentials::new(vec![user(
            "source",
            Secret::Bcrypt(hash),
            &[Role::Source],
            &[],
        )]);
        let p = presented("source", "hackme");
        assert!(matches!(
            store.check(&p, Role::Source, "/m"),
            Check::Pending(_)
        ));
        assert_eq!(
            block_on(store.check(&p, Role::Source, "/m").verdict()),
            Verdict::Allowed
        );
        // Now cached: answered at once.
        assert!(matches!(
            store.check(&p, Role::Source, "/m"),
            Check::Ready(Verdict::Allowed)
        ));
        let wrong = presented("source", "hackm3");
        assert_eq!(
            block_on(store.check(&wrong, Role::Source, "/m").verdict()),
            Verdict::Denied
        );
        assert!(matches!(
            store.check(&wrong, Role::Source, "/m"),
            Check::Ready(Verdict::Denied)
        ));
    }
}
