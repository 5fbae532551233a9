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

/// The client side of RFC 5802 SCRAM, as a state machine.
#[derive(Debug)]
pub(crate) struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// Set after the server's first message: what the server must prove.
    expected_server_signature: Option<Vec<u8>>,
}

/// Kafka refuses fewer iterations; a server asking for fewer is suspicious.
const SCRAM_MIN_ITERATIONS: u32 = 4096;
/// Guard against a hostile server asking for billions of PBKDF2 rounds.
const SCRAM_MAX_ITERATIONS: u32 = 1_000_000;

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

    /// Take the server-first message, return the client-final message.
    pub(crate) fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, String> {
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
        let h = self.hash;
        let salted = h.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
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

    #[test]
    fn usernames_are_escaped() {
        let c = ScramClient::new(ScramHash::Sha256, "a=b,c", "p", "n".into());
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=n");
    }
}
