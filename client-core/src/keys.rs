//! Reading a user's private key: every format `ssh-keygen` writes (OpenSSH, PEM, PKCS#8),
//! plain or passphrase-protected, with errors that say which of those went wrong.
//!
//! russh decodes most of them. One it cannot: legacy PEM encryption ("Proc-Type:
//! 4,ENCRYPTED", as `ssh-keygen -m PEM -N pass` writes) of a non-RSA key, which russh
//! decrypts and then reads as RSA. We decrypt that one here and hand russh the plain PEM.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, KeyIvInit};
use base64ct::{Base64, Encoding};
use russh::keys::PrivateKey;

use crate::ClientError;

/// Decodes `text` (the key file's content) with `passphrase` if the key is encrypted.
pub(crate) fn decode(text: &str, passphrase: Option<&str>) -> Result<PrivateKey, ClientError> {
    let passphrase = passphrase.filter(|p| !p.is_empty());
    if text.trim_start().starts_with("PuTTY-User-Key-File-") {
        // PuTTY's .ppk has no PEM armour; russh reads it.
        return russh::keys::decode_secret_key(text, passphrase)
            .map_err(|err| classify(err, "PuTTY key"));
    }
    let pem = Pem::parse(text)?;
    if pem.encrypted() && passphrase.is_none() {
        return Err(needs_passphrase());
    }
    if let (Some(pass), Some(dek)) = (passphrase, pem.header("DEK-Info")) {
        // Legacy PEM encryption, for every key type: russh handles AES-128 for RSA only.
        let plain = decrypt_legacy_pem(&pem, dek, pass)?;
        return russh::keys::decode_secret_key(&plain, None)
            .map_err(|err| classify(err, &pem.label));
    }
    match russh::keys::decode_secret_key(text, passphrase) {
        Ok(key) => Ok(key),
        // ssh-key reports a failed decryption check of an OpenSSH key this way; PKCS#8
        // decryption failures come back as PKCS#8 errors.
        Err(russh::keys::Error::SshKey(russh::keys::ssh_key::Error::Crypto)) => {
            Err(ClientError::WrongPassphrase)
        }
        Err(russh::keys::Error::Pkcs8(_)) if pem.label == "ENCRYPTED PRIVATE KEY" => {
            Err(ClientError::WrongPassphrase)
        }
        Err(err) => Err(classify(err, &pem.label)),
    }
}

/// The error for a key that could not be read, once a wrong passphrase is ruled out.
fn classify(err: russh::keys::Error, label: &str) -> ClientError {
    match err {
        russh::keys::Error::KeyIsEncrypted => needs_passphrase(),
        russh::keys::Error::UnsupportedKeyType {
            key_type_string, ..
        } => ClientError::BadKey(format!("key type {key_type_string} is not supported")),
        err => ClientError::BadKey(format!(
            "the {label} could not be read ({err}); paste the whole file, BEGIN and END lines included"
        )),
    }
}

fn needs_passphrase() -> ClientError {
    ClientError::BadKey("the key is encrypted: enter its passphrase".into())
}

/// The parts of a PEM file: label, RFC 1421 headers, and the base64 body.
struct Pem {
    label: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Pem {
    fn parse(text: &str) -> Result<Self, ClientError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .skip_while(|l| !l.starts_with("-----BEGIN "));
        let label = lines
            .next()
            .and_then(|l| l.strip_prefix("-----BEGIN "))
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or_else(|| {
                if text.trim_start().starts_with("ssh-") || text.trim_start().starts_with("ecdsa-") {
                    ClientError::BadKey("this is a public key; give the private key file (the one without .pub)".into())
                } else {
                    ClientError::BadKey(
                        "no \"-----BEGIN ... PRIVATE KEY-----\" line: paste the whole private key file".into(),
                    )
                }
            })?
            .to_owned();
        if !label.ends_with("PRIVATE KEY") {
            return Err(ClientError::BadKey(format!(
                "a {label} is not a private key"
            )));
        }
        let (mut headers, mut body) = (Vec::new(), String::new());
        for line in lines.by_ref() {
            if line.starts_with("-----END ") {
                return Ok(Self {
                    label,
                    headers,
                    body,
                });
            }
            match line.split_once(": ") {
                Some((name, value)) if body.is_empty() => {
                    headers.push((name.to_owned(), value.to_owned()))
                }
                _ => body.push_str(line),
            }
        }
        Err(ClientError::BadKey(format!(
            "the {label} has no END line: paste the whole file"
        )))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the file says it is encrypted. (An OpenSSH key says so inside; russh
    /// reports that one.)
    fn encrypted(&self) -> bool {
        self.label == "ENCRYPTED PRIVATE KEY"
            || self
                .header("Proc-Type")
                .is_some_and(|v| v.ends_with("ENCRYPTED"))
    }
}

/// Decrypts OpenSSL's legacy PEM encryption and returns the plain PEM text.
fn decrypt_legacy_pem(pem: &Pem, dek_info: &str, passphrase: &str) -> Result<String, ClientError> {
    let unsupported = || {
        ClientError::BadKey(format!(
            "the key's encryption {dek_info:?} is not supported; re-save it with `ssh-keygen -p -f FILE` (OpenSSH format)"
        ))
    };
    let (cipher, iv_hex) = dek_info.split_once(',').ok_or_else(unsupported)?;
    let iv = hex_decode(iv_hex.trim())
        .filter(|iv| iv.len() == 16)
        .ok_or_else(unsupported)?;
    let mut data = Base64::decode_vec(&pem.body).map_err(|_| {
        ClientError::BadKey("the key's base64 body is damaged: paste the whole file".into())
    })?;
    let key = evp_bytes_to_key(passphrase.as_bytes(), &iv[..8], 32);
    let plain = match cipher {
        "AES-128-CBC" => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key[..16], &iv)
            .map_err(|_| unsupported())?
            .decrypt_padded::<Pkcs7>(&mut data)
            .map(<[u8]>::to_vec),
        "AES-256-CBC" => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
            .map_err(|_| unsupported())?
            .decrypt_padded::<Pkcs7>(&mut data)
            .map(<[u8]>::to_vec),
        _ => return Err(unsupported()),
    }
    .map_err(|_| ClientError::WrongPassphrase)?;
    // A wrong passphrase can still yield valid padding (1 in 256); the key itself is a
    // DER SEQUENCE, which garbage almost never starts with.
    if plain.first() != Some(&0x30) {
        return Err(ClientError::WrongPassphrase);
    }
    let mut out = format!("-----BEGIN {}-----\n", pem.label);
    for chunk in Base64::encode_string(&plain).as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {}-----\n", pem.label));
    Ok(out)
}

/// OpenSSL's EVP_BytesToKey with MD5 and one round, as legacy PEM encryption uses.
fn evp_bytes_to_key(passphrase: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(len + 16);
    let mut previous: Vec<u8> = Vec::new();
    while key.len() < len {
        let mut md5 = md5::Context::new();
        md5.consume(&previous);
        md5.consume(passphrase);
        md5.consume(salt);
        previous = md5.finalize().0.to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(len);
    key
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    text.len()
        .is_multiple_of(2)
        .then(|| {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evp_bytes_to_key_matches_openssl() {
        // `openssl enc -aes-128-cbc -k pass -S 0102030405060708 -P -md md5` prints this key.
        let key = evp_bytes_to_key(b"pass", &[1, 2, 3, 4, 5, 6, 7, 8], 16);
        assert_eq!(
            crate::keys::tests::hex(&key),
            "86a00079beb5dca79870668bb0c56a7e"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn what_is_not_a_private_key_is_named() {
        let err = decode("ssh-ed25519 AAAAC3Nza... me@host", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("public key"), "{err}");
        let err = decode("hello", None).unwrap_err().to_string();
        assert!(err.contains("BEGIN"), "{err}");
        let err = decode("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no END line"), "{err}");
        let err = decode(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a private key"), "{err}");
    }
}
