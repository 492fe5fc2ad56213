//! The TokenReview cache: who a token is, remembered by the SHA-256 of the
//! token (never the token itself), for at most 60 s and never past the
//! token's own `exp`; failures for at most 5 s. Bounded in size.
//!
//! Pure: the caller passes the current time, so expiry is tested without
//! sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

/// How long a successful review is trusted.
pub const POSITIVE_TTL: Duration = Duration::from_secs(60);
/// How long a failed review is remembered (so a retried bad token costs no
/// TokenReview, while a token that just became valid is soon accepted).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Entries kept at most; each is about 100 bytes.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The cache key: SHA-256 of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }
}

/// The `exp` claim (Unix seconds) of a JWT, read without verifying anything:
/// the TokenReview is the verification, this only bounds how long its answer
/// is reused. `None` for anything that is not a JWT with a numeric `exp`.
pub fn jwt_expiry(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<f64>,
    }
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    claims.exp.filter(|e| e.is_finite()).map(|e| e as i64)
}

/// Whether a token has the shape of a JWT (three base64url parts): the only
/// kind of token a service account presents. Anything else is refused
/// without asking the API server.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        })
}

/// How long an answer may be reused: the TTL for its kind, cut at the token's
/// expiry. `exp` and `now_unix` are Unix seconds.
pub fn time_to_live(success: bool, exp: Option<i64>, now_unix: i64) -> Duration {
    let ttl = if success { POSITIVE_TTL } else { NEGATIVE_TTL };
    match exp {
        Some(exp) if exp <= now_unix => Duration::ZERO,
        Some(exp) => ttl.min(Duration::from_secs((exp - now_unix) as u64)),
        None => ttl,
    }
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    expires: Instant,
}

/// A bounded map from token hash to a review answer, with expiry.
#[derive(Debug)]
pub struct TokenCache<V> {
    entries: HashMap<TokenHash, Entry<V>>,
    capacity: usize,
}

impl<V: Clone> TokenCache<V> {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The answer for `key`, if there is one that has not expired at `now`.
    pub fn get(&self, key: &TokenHash, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone())
    }

    /// Remembers `value` until `now + ttl`; a zero TTL stores nothing. When
    /// full, expired entries go first, then those closest to expiry.
    pub fn insert(&mut self, key: TokenHash, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            self.entries.remove(&key);
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        self.entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
    }

    /// Drops expired entries; if that frees nothing, drops the tenth of the
    /// entries closest to expiry, so a full cache costs one scan per tenth of
    /// its capacity in inserts, not one per insert.
    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
        if self.entries.len() < self.capacity {
            return;
        }
        let mut expiries: Vec<Instant> = self.entries.values().map(|e| e.expires).collect();
        let evict = (self.capacity / 10).max(1);
        let (_, cutoff, _) = expiries.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        let mut left = evict;
        self.entries.retain(|_, e| {
            if left > 0 && e.expires <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.{}",
            b64(r#"{"alg":"RS256"}"#),
            b64(payload),
            b64("sig")
        )
    }

    #[test]
    fn reads_exp_without_verifying() {
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":1700000000}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":1700000000.5}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(jwt_expiry(&jwt("not json")), None);
        assert_eq!(jwt_expiry("a.b"), None);
        assert_eq!(jwt_expiry("a.b.c.d"), None);
        assert_eq!(jwt_expiry("not-a-jwt"), None);
    }

    #[test]
    fn recognises_jwt_shapes() {
        assert!(looks_like_jwt(&jwt(r#"{"exp":1}"#)));
        assert!(looks_like_jwt("eyJh.eyJi.")); // unsigned JWTs have an empty signature
        for bad in [
            "", "abc", "a.b", "a.b.c.d", ".b.c", "a b.c.d", "a.b.c\n", "ü.b.c",
        ] {
            assert!(!looks_like_jwt(bad), "{bad:?}");
        }
    }

    #[test]
    fn ttl_is_cut_at_the_tokens_expiry() {
        let now = 1_000_000;
        assert_eq!(time_to_live(true, None, now), POSITIVE_TTL);
        assert_eq!(time_to_live(false, None, now), NEGATIVE_TTL);
        assert_eq!(time_to_live(true, Some(now + 3600), now), POSITIVE_TTL);
        assert_eq!(
            time_to_live(true, Some(now + 7), now),
            Duration::from_secs(7)
        );
        assert_eq!(
            time_to_live(false, Some(now + 2), now),
            Duration::from_secs(2)
        );
        assert_eq!(time_to_live(true, Some(now), now), Duration::ZERO);
        assert_eq!(time_to_live(true, Some(now - 10), now), Duration::ZERO);
    }

    #[test]
    fn keys_are_hashes_not_tokens() {
        let key = TokenHash::of("secret-token");
        assert_eq!(key, TokenHash::of("secret-token"));
        assert_ne!(key, TokenHash::of("secret-token2"));
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn entries_expire_at_their_ttl() {
        let mut cache = TokenCache::new(10);
        let t0 = Instant::now();
        let (a, b) = (TokenHash::of("a"), TokenHash::of("b"));
        // A positive answer for a token expiring in 7 s lives 7 s, not 60.
        cache.insert(a, "alice", time_to_live(true, Some(107), 100), t0);
        // A negative answer lives 5 s.
        cache.insert(b, "nobody", time_to_live(false, None, 100), t0);
        assert_eq!(cache.get(&a, t0 + Duration::from_secs(6)), Some("alice"));
        assert_eq!(cache.get(&a, t0 + Duration::from_secs(7)), None);
        assert_eq!(
            cache.get(&b, t0 + Duration::from_millis(4999)),
            Some("nobody")
        );
        assert_eq!(cache.get(&b, t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn positive_entries_never_outlive_sixty_seconds() {
        let mut cache = TokenCache::new(10);
        let t0 = Instant::now();
        let a = TokenHash::of("a");
        cache.insert(a, 1, time_to_live(true, Some(100 + 86_400), 100), t0);
        assert_eq!(cache.get(&a, t0 + Duration::from_secs(59)), Some(1));
        assert_eq!(cache.get(&a, t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn zero_ttl_stores_nothing_and_forgets_the_old_answer() {
        let mut cache = TokenCache::new(10);
        let t0 = Instant::now();
        let a = TokenHash::of("a");
        cache.insert(a, 1, POSITIVE_TTL, t0);
        cache.insert(a, 2, Duration::ZERO, t0);
        assert_eq!(cache.get(&a, t0), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn size_is_bounded() {
        let mut cache = TokenCache::new(100);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let ttl = Duration::from_secs(1 + u64::from(i % 50));
            cache.insert(TokenHash::of(&i.to_string()), i, ttl, t0);
            assert!(cache.len() <= 100);
        }
        // The latest insert is always kept.
        assert_eq!(cache.get(&TokenHash::of("9999"), t0), Some(9999));
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let mut cache = TokenCache::new(3);
        let t0 = Instant::now();
        cache.insert(TokenHash::of("short"), 0, Duration::from_secs(1), t0);
        cache.insert(TokenHash::of("long1"), 1, Duration::from_secs(60), t0);
        cache.insert(TokenHash::of("long2"), 2, Duration::from_secs(60), t0);
        let later = t0 + Duration::from_secs(2);
        cache.insert(TokenHash::of("new"), 3, Duration::from_secs(60), later);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&TokenHash::of("long1"), later), Some(1));
        assert_eq!(cache.get(&TokenHash::of("long2"), later), Some(2));
        assert_eq!(cache.get(&TokenHash::of("new"), later), Some(3));
    }
}
