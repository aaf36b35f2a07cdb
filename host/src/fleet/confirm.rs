//! Confirmation from other vantage points (`confirm = K` on a fleet
//! target): before the owner opens an issue on what it saw, it asks K
//! other members to check the same target from where they are
//! (`POST /api/v1/fleet/confirm` on the URL each advertises in its member
//! key). Only when every one of them sees it fail too does the owner act;
//! otherwise the check is UNKNOWN with every view named, since a problem
//! of the owner's own network is not an outage of the target.

use std::time::Duration;

use healer_plugin_sdk::Status;
use serde::{Deserialize, Serialize};

use super::{etcd_error, keys, preference, shard_of, Fleet, CALL_WITHIN};

/// How long the owner waits for a member's view.
pub const ASK_WITHIN: Duration = Duration::from_secs(5);

/// What one member saw of a target when asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub member: String,
    pub status: Status,
    pub summary: String,
}

/// One member's answer, or why it gave none.
pub type Answer = (String, Result<Seen, String>);

impl Fleet {
    /// The token the other members' APIs require (the fleet shares one
    /// config, so its `[intake]` token).
    pub fn use_token(&self, token: Option<String>) {
        let _ = self.inner.token.set(token);
    }

    /// Asks `k` other members (the same ones for the same target, as
    /// long as the fleet is the same) to check `target`: each one's view,
    /// or why it has none. Fewer members than `k` leaves the rest with an
    /// error.
    pub async fn confirm(&self, target: &str, k: u32) -> Vec<Answer> {
        let mut others = match self.advertised().await {
            Ok(others) => others,
            Err(why) => return vec![("etcd".to_owned(), Err(why))],
        };
        let shard = shard_of(target);
        others.sort_by_key(|(member, _)| std::cmp::Reverse(preference(member, shard)));
        let asked = others.into_iter().take(k as usize);
        let asking = asked.map(|(member, url)| async move {
            let seen = self.ask(&url, target).await;
            (member, seen)
        });
        let mut answers = futures_util::future::join_all(asking).await;
        while answers.len() < k as usize {
            answers.push((
                "-".to_owned(),
                Err("no other member advertises an API to ask".to_owned()),
            ));
        }
        answers
    }

    /// The other members that advertise an API, with its URL.
    async fn advertised(&self) -> Result<Vec<(String, String)>, String> {
        #[derive(Deserialize)]
        struct About {
            advertise: Option<String>,
        }
        let got = self
            .inner
            .etcd
            .call(CALL_WITHIN, |mut client| async move {
                let all = etcd_client::GetOptions::new().with_prefix();
                client.get(keys::members(), Some(all)).await
            })
            .await
            .map_err(|_| "etcd did not list the members in time".to_owned())?
            .map_err(|err| format!("etcd did not list the members: {}", etcd_error(&err)))?;
        let prefix = keys::members();
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| {
                let member = kv.key_str().ok()?.strip_prefix(&prefix)?.to_owned();
                let about: About = serde_json::from_slice(kv.value()).ok()?;
                (member != self.member()).then_some((member, about.advertise?))
            })
            .collect())
    }

    async fn ask(&self, url: &str, target: &str) -> Result<Seen, String> {
        let http = self.inner.http.get_or_init(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .timeout(ASK_WITHIN)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("healer/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|err| err.to_string())
        });
        let http = http.as_ref().map_err(Clone::clone)?;
        let mut request = http
            .post(format!(
                "{}/api/v1/fleet/confirm",
                url.trim_end_matches('/')
            ))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "target": target }).to_string());
        if let Some(Some(token)) = self.inner.token.get() {
            request = request.bearer_auth(token);
        }
        let answer = request
            .send()
            .await
            .map_err(|err| format!("{url} did not answer: {}", innermost(&err)))?;
        let status = answer.status();
        let body = answer
            .bytes()
            .await
            .map_err(|err| format!("{url}: {}", innermost(&err)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!("{url} answered {status}: {text}"));
        }
        serde_json::from_slice(&body).map_err(|err| format!("{url}: not a view: {err}"))
    }
}

/// The innermost cause of an error (reqwest's outer ones say little).
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut err = err;
    while let Some(source) = err.source() {
        err = source;
    }
    crate::one_line::OneLine(&err.to_string()).to_string()
}

/// Whether `answers` all confirm the owner's failing view: every member
/// answered, and saw the target fail (WARNING or CRITICAL) too.
pub fn agreed(answers: &[Answer]) -> bool {
    answers.iter().all(|(_, answer)| {
        answer
            .as_ref()
            .is_ok_and(|seen| matches!(seen.status, Status::Warning | Status::Critical))
    })
}

/// Every view in one line: the owner's first.
pub fn views(owner: &Seen, answers: &[Answer]) -> String {
    let mut said = vec![format!(
        "{} (owner) sees {}: {}",
        owner.member,
        owner.status.as_str(),
        owner.summary
    )];
    for (member, answer) in answers {
        said.push(match answer {
            Ok(seen) => format!("{member} sees {}: {}", seen.status.as_str(), seen.summary),
            Err(why) => format!("{member} could not tell: {why}"),
        });
    }
    said.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(member: &str, status: Status) -> Answer {
        (
            member.to_owned(),
            Ok(Seen {
                member: member.to_owned(),
                status,
                summary: "x".to_owned(),
            }),
        )
    }

    #[test]
    fn only_every_member_seeing_it_fail_confirms() {
        assert!(agreed(&[
            seen("h2", Status::Critical),
            seen("h3", Status::Warning)
        ]));
        assert!(!agreed(&[
            seen("h2", Status::Critical),
            seen("h3", Status::Ok)
        ]));
        assert!(!agreed(&[
            seen("h2", Status::Critical),
            seen("h3", Status::Unknown)
        ]));
        assert!(!agreed(&[
            seen("h2", Status::Critical),
            ("h3".to_owned(), Err("timed out".to_owned()))
        ]));
    }

    #[test]
    fn the_views_name_every_member() {
        let owner = Seen {
            member: "h1".to_owned(),
            status: Status::Critical,
            summary: "refused".to_owned(),
        };
        let said = views(
            &owner,
            &[
                seen("h2", Status::Ok),
                ("h3".to_owned(), Err("down".to_owned())),
            ],
        );
        assert_eq!(
            said,
            "h1 (owner) sees CRITICAL: refused; h2 sees OK: x; h3 could not tell: down"
        );
    }
}
