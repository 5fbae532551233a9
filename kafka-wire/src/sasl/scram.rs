//! SCRAM-SHA-256/512 (RFC 5802, RFC 7677): a pure message transformer with
//! the nonce injected, behind kafka-wire's `scram` feature (on by default;
//! it brings sha2, hmac and pbkdf2, all pure Rust).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// SCRAM hash choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// PBKDF2 of `password`: `iterations` (at most 16,384) rounds of HMAC.
    /// CPU-bound (milliseconds): async code runs it through
    /// [`salted_password_blocking`], never on a runtime worker.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// [`ScramHash::salted_password`] on tokio's blocking pool, so the PBKDF2
/// rounds never stall the runtime worker that drives the connection.
///
/// # Errors
/// The blocking task panicked or the runtime is shutting down (as text).
pub(crate) async fn salted_password_blocking(
    hash: ScramHash,
    password: String,
    salt: Vec<u8>,
    iterations: u32,
) -> Result<Vec<u8>, String> {
    tokio::task::spawn_blocking(move || {
        hash.salted_password(password.as_bytes(), &salt, iterations)
    })
    .await
    .map_err(|e| format!("SCRAM key derivation did not finish: {e}"))
}

/// What the server's first message asks for: the salt and the rounds, for
/// [`salted_password_blocking`], before [`ScramClient::client_final`].
#[derive(Debug)]
pub(crate) struct ServerFirst {
    pub(crate) salt: Vec<u8>,
    pub(crate) iterations: u32,
    nonce: String,
    message: String,
}

/// The client side of RFC 5802 SCRAM, as a state machine.
pub(crate) struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// Set after the server's first message: what the server must prove.
    expected_server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password (nor the proof material).
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Kafka refuses fewer iterations; a server asking for fewer is suspicious.
const SCRAM_MIN_ITERATIONS: u32 = 4096;
/// Kafka's own maximum (`ScramMechanism.maxIterations`): a server asking
/// for more is hostile (each round is an HMAC on our CPU).
pub(crate) const SCRAM_MAX_ITERATIONS: u32 = 16_384;

fn scram_escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    pub(crate) fn new(
        hash: ScramHash,
        username: &str,
        password: &str,
        client_nonce: String,
    ) -> Self {
        let client_first_bare = format!("n={},r={client_nonce}", scram_escape(username));
        Self {
            hash,
            password: password.to_string(),
            client_nonce,
            client_first_bare,
            expected_server_signature: None,
        }
    }

    /// A fresh random nonce (printable, no commas).
    pub(crate) fn random_nonce() -> String {
        let bytes: [u8; 24] = rand::random();
        STANDARD.encode(bytes)
    }

    /// The client-first message (`n,,n=user,r=nonce`).
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Take the server-first message, return the client-final message
    /// (PBKDF2 inline: for tests; the connection uses [`Self::parse_server_first`],
    /// [`salted_password_blocking`] and [`Self::client_final`]).
    #[cfg(test)]
    pub(crate) fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let first = self.parse_server_first(msg)?;
        let salted =
            self.hash
                .salted_password(self.password.as_bytes(), &first.salt, first.iterations);
        Ok(self.client_final(&first, &salted))
    }

    /// The hash and password, for [`salted_password_blocking`].
    pub(crate) fn key_inputs(&self) -> (ScramHash, String) {
        (self.hash, self.password.clone())
    }

    /// Check the server-first message: the nonce extends ours, the salt is
    /// base64, the iteration count is within 4096..=16384 (Kafka's bounds).
    ///
    /// # Errors
    /// Each check, as text naming what was wrong.
    pub(crate) fn parse_server_first(&self, msg: &[u8]) -> Result<ServerFirst, String> {
        let msg = std::str::from_utf8(msg).map_err(|_| "server-first is not UTF-8".to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in msg.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", v)) => return Err(format!("server error: {v}")),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("server-first lacks r, s or i: {msg:?}"));
        };
        // The server nonce must extend ours, or this is a replay or a MITM.
        if !nonce.starts_with(&self.client_nonce) || nonce.len() <= self.client_nonce.len() {
            return Err("server nonce does not extend the client nonce".into());
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| "server salt is not base64".to_string())?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| format!("bad iteration count {iterations:?}"))?;
        if !(SCRAM_MIN_ITERATIONS..=SCRAM_MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "iteration count {iterations} outside {SCRAM_MIN_ITERATIONS}..={SCRAM_MAX_ITERATIONS}"
            ));
        }
        Ok(ServerFirst {
            salt,
            iterations,
            nonce: nonce.to_string(),
            message: msg.to_string(),
        })
    }

    /// The client-final message, from the server-first and its salted
    /// password; remembers the signature the server must send back.
    pub(crate) fn client_final(&mut self, first: &ServerFirst, salted: &[u8]) -> Vec<u8> {
        let (nonce, msg) = (&first.nonce, &first.message);
        let h = self.hash;
        let client_key = h.hmac(salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(salted, b"Server Key");
        self.expected_server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes()
    }

    /// Verify the server-final message: the server must prove it knows the password.
    pub(crate) fn handle_server_final(&self, msg: &[u8]) -> Result<(), String> {
        let msg = std::str::from_utf8(msg).map_err(|_| "server-final is not UTF-8".to_string())?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(format!("server error: {e}"));
        }
        let v = msg
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| format!("server-final lacks v=: {msg:?}"))?;
        let got = STANDARD
            .decode(v)
            .map_err(|_| "server signature is not base64".to_string())?;
        match &self.expected_server_signature {
            Some(expected) if *expected == got => Ok(()),
            Some(_) => Err("server signature does not verify: the broker does not know the password (or a MITM)".into()),
            None => Err("server-final before server-first".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn rfc7677_scram_sha256_vector() {
        let mut c = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let final_msg = c
            .handle_server_first(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(final_msg).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.handle_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn forged_server_signature_is_rejected() {
        let mut c = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        c.handle_server_first(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        )
        .unwrap();
        let err = c
            .handle_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn server_nonce_must_extend_ours() {
        let mut c = ScramClient::new(ScramHash::Sha512, "u", "p", "abc".into());
        let err = c
            .handle_server_first(b"r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap_err();
        assert!(err.contains("nonce"), "{err}");
        let err = c
            .handle_server_first(b"r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap_err();
        assert!(err.contains("nonce"), "{err}");
    }

    #[test]
    fn hostile_iteration_counts_are_refused() {
        let mut c = ScramClient::new(ScramHash::Sha256, "u", "p", "abc".into());
        assert!(c
            .handle_server_first(b"r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4000000000")
            .is_err());
        assert!(c
            .handle_server_first(b"r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1")
            .is_err());
    }

    /// Kafka's maximum is 16,384 rounds: one more is refused before any
    /// PBKDF2 runs (1,000,000 used to be accepted).
    #[test]
    fn iteration_counts_above_kafkas_maximum_are_refused() {
        let c = ScramClient::new(ScramHash::Sha512, "u", "p", "abc".into());
        let ok = c
            .parse_server_first(b"r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=16384")
            .unwrap();
        assert_eq!(ok.iterations, 16_384);
        let err = c
            .parse_server_first(b"r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=16385")
            .unwrap_err();
        assert!(err.contains("16384"), "{err}");
    }

    /// PBKDF2 runs off the runtime's thread: on a current-thread runtime,
    /// another task makes progress while the key is derived (inline, it
    /// could not run until the derivation was over).
    #[tokio::test(flavor = "current_thread")]
    async fn key_derivation_does_not_block_the_runtime() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let (ticks, stop) = (ticks.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let salted = salted_password_blocking(
            ScramHash::Sha512,
            "pencil".into(),
            b"salt".to_vec(),
            SCRAM_MAX_ITERATIONS,
        )
        .await
        .unwrap();
        let during = ticks.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        ticker.await.unwrap();
        assert_eq!(salted.len(), 64);
        assert!(during > 0, "the runtime was blocked during PBKDF2");
    }

    #[test]
    fn scram_client_debug_never_prints_the_password() {
        let c = ScramClient::new(ScramHash::Sha256, "u", "s3cr3t-pw", "n".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any server-first message: no panic, and an accepted one never
        /// asks for more than Kafka's maximum rounds.
        #[test]
        fn any_server_first_is_parsed_without_panic(
            msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128),
            i in proptest::prelude::any::<u32>(),
        ) {
            let c = ScramClient::new(ScramHash::Sha256, "u", "p", "abc".into());
            let _ = c.parse_server_first(&msg);
            let framed = format!("r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={i}");
            if let Ok(first) = c.parse_server_first(framed.as_bytes()) {
                proptest::prop_assert!(first.iterations <= SCRAM_MAX_ITERATIONS);
            }
            let _ = c.handle_server_final(&msg);
        }
    }

    #[test]
    fn usernames_are_escaped() {
        let c = ScramClient::new(ScramHash::Sha256, "a=b,c", "p", "n".into());
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=n");
    }
}
