//! Which host keys the tab trusts. Like OpenSSH's known_hosts, a key is remembered per
//! relay, target and key type: a server that shows another type is a new key to
//! confirm (with a warning), not a changed one. [`decide`] holds every rule; a
//! [`KnownHosts`] store only remembers (the browser's localStorage in client-wasm,
//! [`MemoryKnownHosts`] natively).

use std::collections::BTreeMap;

/// Where a remembered key belongs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KnownHostId {
    /// The relay's origin, e.g. `https://relay.example.com`: the same target name on
    /// another relay may be another server.
    pub relay: String,
    pub target: String,
    /// The key's type, e.g. `ssh-ed25519`.
    pub algorithm: String,
}

/// Why a store could not remember or forget a key (storage full or disabled).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the known host keys could not be saved: {0}")]
pub struct KnownHostsError(pub String);

/// Host keys remembered for (relay, target, key type), as `SHA256:...` fingerprints.
pub trait KnownHosts: Send {
    /// The fingerprint remembered for `id`.
    fn get(&self, id: &KnownHostId) -> Option<String>;
    /// Remembers `fingerprint` for `id`, replacing what was there.
    fn put(&mut self, id: &KnownHostId, fingerprint: &str) -> Result<(), KnownHostsError>;
    /// Forgets the key of `id`: the next connection asks anew.
    fn forget(&mut self, id: &KnownHostId) -> Result<(), KnownHostsError>;
    /// Every key type with a key remembered for `relay`'s `target`.
    fn algorithms(&self, relay: &str, target: &str) -> Vec<String>;
}

/// A [`KnownHosts`] that lives as long as the value: for tests and native programs.
#[derive(Debug, Default, Clone)]
pub struct MemoryKnownHosts {
    keys: BTreeMap<KnownHostId, String>,
}

impl KnownHosts for MemoryKnownHosts {
    fn get(&self, id: &KnownHostId) -> Option<String> {
        self.keys.get(id).cloned()
    }

    fn put(&mut self, id: &KnownHostId, fingerprint: &str) -> Result<(), KnownHostsError> {
        self.keys.insert(id.clone(), fingerprint.to_owned());
        Ok(())
    }

    fn forget(&mut self, id: &KnownHostId) -> Result<(), KnownHostsError> {
        self.keys.remove(id);
        Ok(())
    }

    fn algorithms(&self, relay: &str, target: &str) -> Vec<String> {
        self.keys
            .keys()
            .filter(|id| id.relay == relay && id.target == target)
            .map(|id| id.algorithm.clone())
            .collect()
    }
}

/// The tab's remembered keys for one relay, for [`crate::HostKeyPolicy`]; the target
/// comes from `connect`.
pub struct KnownHostsCheck {
    pub store: Box<dyn KnownHosts>,
    /// The relay's origin (see [`KnownHostId::relay`]).
    pub relay: String,
}

impl KnownHostsCheck {
    pub fn id(&self, target: &str, algorithm: &str) -> KnownHostId {
        KnownHostId {
            relay: self.relay.clone(),
            target: target.to_owned(),
            algorithm: algorithm.to_owned(),
        }
    }
}

impl std::fmt::Debug for KnownHostsCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownHostsCheck")
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

/// What the store knows about the target, read before deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remembered {
    /// The key remembered for the offered key's type.
    pub same_type: Option<String>,
    /// Types other than the offered one with a remembered key.
    pub other_types: Vec<String>,
}

impl Remembered {
    /// Reads what `store` remembers for `id`'s relay and target.
    pub fn read(store: &dyn KnownHosts, id: &KnownHostId) -> Self {
        Self {
            same_type: store.get(id),
            other_types: store
                .algorithms(&id.relay, &id.target)
                .into_iter()
                .filter(|a| *a != id.algorithm)
                .collect(),
        }
    }
}

/// Everything the rules look at for one offered key.
#[derive(Debug, Clone, Copy)]
pub struct HostKeyFacts<'a> {
    /// The offered key's `SHA256:...` fingerprint.
    pub fingerprint: &'a str,
    /// Fingerprints the relay's operator pinned for the target (empty: no pins).
    pub pinned: &'a [String],
    /// The fingerprint the caller expects (the JS API's `hostKey`), if any.
    pub expected: Option<&'a str>,
    /// What a store remembers; `None` when the caller keeps no store.
    pub remembered: Option<&'a Remembered>,
    /// Someone can be asked (an `onHostKey` callback).
    pub can_ask: bool,
}

/// What to do with an offered host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The key remembered for this type, or the one the caller expects.
    Known,
    /// Pinned by the operator and nothing the tab knows speaks against it: accepted
    /// without asking, and remembered when there is a store.
    Pinned,
    /// Seen for the first time: ask; remember it if the answer is yes.
    AskFirstUse,
    /// No key of this type is known, but keys of `known_types` are: ask with a warning
    /// (the server may have been reconfigured, or someone may be in between).
    AskNewKeyType { known_types: Vec<String> },
    /// Refused: another key is remembered for this type; the user must forget it first.
    Changed { remembered: String },
    /// Refused: not the key the caller expects.
    NotExpected { expected: String },
    /// Refused: the operator pinned other keys for this target.
    NotPinned { pinned: Vec<String> },
    /// Refused: nothing vouches for the key and nobody can be asked.
    Unknown,
}

/// The host-key rules, strongest first. Operator pins narrow what is acceptable and
/// never replace the tab's own check (a relay that chooses the pins must not vouch for
/// its own key): a remembered key wins over a pin, and a new key type is asked even
/// when pinned. The caller's expected fingerprint, when given, decides alone.
pub fn decide(facts: &HostKeyFacts<'_>) -> Trust {
    let fingerprint = facts.fingerprint;
    let pinned = !facts.pinned.is_empty();
    if pinned && !facts.pinned.iter().any(|p| p == fingerprint) {
        return Trust::NotPinned {
            pinned: facts.pinned.to_vec(),
        };
    }
    if let Some(expected) = facts.expected {
        return if expected == fingerprint {
            Trust::Known
        } else {
            Trust::NotExpected {
                expected: expected.to_owned(),
            }
        };
    }
    let question = match facts.remembered {
        Some(Remembered {
            same_type: Some(remembered),
            ..
        }) => {
            return if remembered == fingerprint {
                Trust::Known
            } else {
                Trust::Changed {
                    remembered: remembered.clone(),
                }
            };
        }
        Some(Remembered { other_types, .. }) if !other_types.is_empty() => Trust::AskNewKeyType {
            known_types: other_types.clone(),
        },
        // With a store, a pinned key nothing contradicts needs no question.
        Some(_) if pinned => return Trust::Pinned,
        _ => Trust::AskFirstUse,
    };
    match (facts.can_ask, pinned, &question) {
        (true, ..) => question,
        // Without a store or a question, only an operator pin makes a key known.
        (false, true, Trust::AskFirstUse) => Trust::Pinned,
        (false, ..) => Trust::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "https://relay.example.com";
    const KEY: &str = "SHA256:offered";
    const OTHER: &str = "SHA256:someoneelse";

    fn id(target: &str, algorithm: &str) -> KnownHostId {
        KnownHostId {
            relay: RELAY.into(),
            target: target.into(),
            algorithm: algorithm.into(),
        }
    }

    /// The decision for `KEY` as an ed25519 key of target "lab", with `store`.
    fn judge(store: &MemoryKnownHosts, pinned: &[&str], can_ask: bool) -> Trust {
        let remembered = Remembered::read(store, &id("lab", "ssh-ed25519"));
        let pinned: Vec<String> = pinned.iter().map(|p| p.to_string()).collect();
        decide(&HostKeyFacts {
            fingerprint: KEY,
            pinned: &pinned,
            expected: None,
            remembered: Some(&remembered),
            can_ask,
        })
    }

    fn store_with(entries: &[(&str, &str, &str)]) -> MemoryKnownHosts {
        let mut store = MemoryKnownHosts::default();
        for (target, algorithm, fingerprint) in entries {
            store.put(&id(target, algorithm), fingerprint).unwrap();
        }
        store
    }

    #[test]
    fn first_use_asks() {
        assert_eq!(
            judge(&MemoryKnownHosts::default(), &[], true),
            Trust::AskFirstUse
        );
    }

    #[test]
    fn first_use_with_nobody_to_ask_is_refused() {
        assert_eq!(
            judge(&MemoryKnownHosts::default(), &[], false),
            Trust::Unknown
        );
    }

    #[test]
    fn the_remembered_key_is_trusted_without_asking() {
        let store = store_with(&[("lab", "ssh-ed25519", KEY)]);
        assert_eq!(judge(&store, &[], true), Trust::Known);
        assert_eq!(judge(&store, &[], false), Trust::Known);
    }

    #[test]
    fn a_changed_key_is_refused_naming_the_remembered_one() {
        let store = store_with(&[("lab", "ssh-ed25519", OTHER)]);
        assert_eq!(
            judge(&store, &[], true),
            Trust::Changed {
                remembered: OTHER.into()
            }
        );
        // A pin on the new key does not replace what the user confirmed earlier.
        assert_eq!(
            judge(&store, &[KEY], true),
            Trust::Changed {
                remembered: OTHER.into()
            }
        );
    }

    #[test]
    fn keys_are_remembered_per_relay_target_and_type() {
        // The same fingerprint for another target, or on another relay, says nothing here.
        let mut store = store_with(&[("elsewhere", "ssh-ed25519", KEY)]);
        let mut other_relay = id("lab", "ssh-ed25519");
        other_relay.relay = "https://other.example.com".into();
        store.put(&other_relay, KEY).unwrap();
        assert_eq!(judge(&store, &[], true), Trust::AskFirstUse);
    }

    #[test]
    fn a_new_key_type_is_asked_with_a_warning_naming_the_known_types() {
        let store = store_with(&[
            ("lab", "ecdsa-sha2-nistp256", OTHER),
            ("lab", "ssh-rsa", OTHER),
        ]);
        let warned = Trust::AskNewKeyType {
            known_types: vec!["ecdsa-sha2-nistp256".into(), "ssh-rsa".into()],
        };
        assert_eq!(judge(&store, &[], true), warned);
        // Even when the operator pinned the new key: a relay could pin one of its own.
        assert_eq!(judge(&store, &[KEY], true), warned);
        assert_eq!(judge(&store, &[KEY], false), Trust::Unknown);
    }

    #[test]
    fn a_pinned_key_nothing_contradicts_is_accepted_without_asking() {
        let store = MemoryKnownHosts::default();
        assert_eq!(judge(&store, &[OTHER, KEY], true), Trust::Pinned);
        assert_eq!(judge(&store, &[KEY], false), Trust::Pinned);
    }

    #[test]
    fn a_key_the_operator_did_not_pin_is_refused_even_if_remembered() {
        let store = store_with(&[("lab", "ssh-ed25519", KEY)]);
        assert_eq!(
            judge(&store, &[OTHER], true),
            Trust::NotPinned {
                pinned: vec![OTHER.into()]
            }
        );
    }

    #[test]
    fn the_expected_fingerprint_decides_alone_within_the_pins() {
        let remembered = Remembered {
            same_type: Some(OTHER.into()),
            other_types: vec![],
        };
        let expecting = |expected: &str, pinned: &[String]| {
            decide(&HostKeyFacts {
                fingerprint: KEY,
                pinned,
                expected: Some(expected),
                remembered: Some(&remembered),
                can_ask: true,
            })
        };
        assert_eq!(expecting(KEY, &[]), Trust::Known);
        assert_eq!(
            expecting(OTHER, &[]),
            Trust::NotExpected {
                expected: OTHER.into()
            }
        );
        assert_eq!(expecting(KEY, &[KEY.to_owned()]), Trust::Known);
        assert_eq!(
            expecting(KEY, &[OTHER.to_owned()]),
            Trust::NotPinned {
                pinned: vec![OTHER.into()]
            }
        );
    }

    #[test]
    fn without_a_store_the_question_decides_and_pins_only_narrow() {
        let facts = |pinned: &[String], can_ask| {
            decide(&HostKeyFacts {
                fingerprint: KEY,
                pinned,
                expected: None,
                remembered: None,
                can_ask,
            })
        };
        let pin = [KEY.to_owned()];
        // The callback still decides, and learns the key is pinned.
        assert_eq!(facts(&pin, true), Trust::AskFirstUse);
        assert_eq!(facts(&pin, false), Trust::Pinned);
        assert_eq!(facts(&[], true), Trust::AskFirstUse);
        assert_eq!(facts(&[], false), Trust::Unknown);
        assert_eq!(
            facts(&[OTHER.to_owned()], true),
            Trust::NotPinned {
                pinned: vec![OTHER.into()]
            }
        );
    }

    #[test]
    fn forgetting_a_key_makes_the_next_connection_ask_again() {
        let mut store = store_with(&[("lab", "ssh-ed25519", OTHER)]);
        store.forget(&id("lab", "ssh-ed25519")).unwrap();
        assert_eq!(judge(&store, &[], true), Trust::AskFirstUse);
    }
}
