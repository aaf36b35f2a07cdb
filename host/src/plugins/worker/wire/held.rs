//! Decoding that holds a worker's message to [`bounds`] as it is read, so
//! a message costs healer no more than the limits, whatever the frame
//! holds: strings are borrowed from the frame and at most their limit is
//! copied; a list keeps at most its limit and walks over the rest without
//! copying anything of it (the `Skip` shapes below borrow every string).
//!
//! The encoding is postcard's, unchanged: these are only other ways of
//! reading the same bytes. The skip shapes mirror the wire types field
//! for field and variant for variant; a test keeps them in step.

use std::fmt;
use std::marker::PhantomData;

use healer_plugin_sdk::Status;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Diagnosis, Found};
use crate::plugins::bounds;

/// Reads a string, keeping at most `limit` bytes of it.
struct Cut(usize);

impl<'de> Visitor<'de> for Cut {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E>(self, text: &str) -> Result<String, E> {
        Ok(bounds::cut(text, self.0))
    }

    fn visit_string<E>(self, mut text: String) -> Result<String, E> {
        bounds::cut_in_place(&mut text, self.0);
        Ok(text)
    }
}

/// A summary or an error: [`bounds::TEXT_BYTES`].
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(Cut(bounds::TEXT_BYTES))
}

/// A finding kind: cut just past [`bounds::KIND_BYTES`], so a longer one
/// still fails the kind check instead of becoming another kind.
pub fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(Cut(bounds::KIND_BYTES + 4))
}

/// A finding's or an outcome's details (JSON text):
/// [`bounds::DETAILS_BYTES`].
pub fn details<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(Details(bounds::DETAILS_BYTES))
}

/// An observation's details (JSON text):
/// [`bounds::OBSERVATION_DETAILS_BYTES`].
pub fn observed_details<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(Details(bounds::OBSERVATION_DETAILS_BYTES))
}

/// Reads details, held to a limit ([`bounds::details_text`]).
struct Details(usize);

impl<'de> Visitor<'de> for Details {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON text")
    }

    fn visit_str<E>(self, text: &str) -> Result<String, E> {
        Ok(bounds::details_text(text, self.0).into_owned())
    }
}

/// An error a worker answers instead of a reply.
pub fn answer<'de, D, T>(d: D) -> Result<Result<T, String>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    /// `Result`, variant for variant, with its error held.
    #[derive(Deserialize)]
    enum Answered<T> {
        Ok(T),
        Err(#[serde(deserialize_with = "text")] String),
    }
    Ok(match Answered::<T>::deserialize(d)? {
        Answered::Ok(answer) => Ok(answer),
        Answered::Err(error) => Err(error),
    })
}

/// A declared finding kind: cut just past [`bounds::KIND_BYTES`], as a
/// finding's is, so a longer one is no kind.
struct DeclaredKind(String);

impl<'de> Deserialize<'de> for DeclaredKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DeclaredKind, D::Error> {
        d.deserialize_str(Cut(bounds::KIND_BYTES + 4))
            .map(DeclaredKind)
    }
}

/// A declaration's kinds: more than [`bounds::DECLARED_KINDS`] are walked
/// over and declare nothing (see [`bounds::declared`]).
struct DeclaredKinds(Option<Vec<String>>);

impl<'de> Deserialize<'de> for DeclaredKinds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DeclaredKinds, D::Error> {
        let (kept, beyond) =
            d.deserialize_seq(Capped::<DeclaredKind, &str>::new(bounds::DECLARED_KINDS))?;
        Ok(DeclaredKinds(
            (beyond == 0).then(|| kept.into_iter().map(|kind| kind.0).collect()),
        ))
    }
}

/// The kinds a plugin declares, held as they are decoded.
pub fn declared_kinds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<DeclaredKinds>::deserialize(d)?.and_then(|kinds| kinds.0))
}

/// A metric's name or unit.
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        d.deserialize_str(Cut(bounds::METRIC_NAME_BYTES)).map(Name)
    }
}

/// An observation's metrics: at most [`bounds::METRICS_PER_OBSERVATION`].
pub fn metrics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64, String)>, D::Error> {
    let (kept, _) = d.deserialize_seq(Capped::<(Name, f64, Name), (&str, f64, &str)>::new(
        bounds::METRICS_PER_OBSERVATION,
    ))?;
    Ok(kept
        .into_iter()
        .map(|(name, value, unit)| (name.0, value, unit.0))
        .collect())
}

/// A worker's diagnoses: at most [`bounds::DIAGNOSES_PER_ANSWER`] (one per
/// diagnoser is asked for).
pub fn diagnoses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Diagnosis>, D::Error> {
    d.deserialize_seq(Capped::<Diagnosis, DiagnosisSkip>::new(
        bounds::DIAGNOSES_PER_ANSWER,
    ))
    .map(|(kept, _)| kept)
}

/// A diagnoser's findings on the wire: at most
/// [`bounds::FINDINGS_PER_ANSWER`] are decoded, the rest only counted.
/// Encoded as the plain list it holds.
#[derive(Debug, Default)]
pub struct FoundList {
    pub kept: Vec<Found>,
    /// Findings in the message beyond those kept.
    pub dropped: usize,
}

impl FromIterator<Found> for FoundList {
    fn from_iter<I: IntoIterator<Item = Found>>(found: I) -> FoundList {
        FoundList {
            kept: found.into_iter().collect(),
            dropped: 0,
        }
    }
}

impl Serialize for FoundList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.kept.serialize(s)
    }
}

impl<'de> Deserialize<'de> for FoundList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FoundList, D::Error> {
        let (borrowed, dropped) = d.deserialize_seq(Capped::<FoundSkip, FoundSkip>::new(
            bounds::FINDINGS_PER_ANSWER,
        ))?;
        // Copied from the frame only now, the details of all of them
        // within the one budget of an answer.
        let mut budget = bounds::DetailsBudget::default();
        let kept = borrowed
            .into_iter()
            .map(|found| Found {
                kind: bounds::cut(found.kind, bounds::KIND_BYTES + 4),
                severity: found.severity,
                summary: bounds::cut(found.summary, bounds::TEXT_BYTES),
                details: budget.take(found.details).into_owned(),
            })
            .collect();
        Ok(FoundList { kept, dropped })
    }
}

/// A [`Found`] as it lies in the frame: nothing copied.
#[derive(Deserialize)]
pub(super) struct FoundSkip<'a> {
    kind: &'a str,
    severity: Status,
    summary: &'a str,
    details: &'a str,
}

/// A [`Diagnosis`] walked over: nothing copied.
#[derive(Deserialize)]
#[allow(dead_code)] // Read only to move past it.
pub(super) enum DiagnosisSkip<'a> {
    Found(Skipped<FoundSkip<'a>>),
    Failed(&'a str),
    TimedOut,
}

/// A list walked over, element by element as `S`.
pub(super) struct Skipped<S>(PhantomData<S>);

impl<'de, S: Deserialize<'de>> Deserialize<'de> for Skipped<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skipped<S>, D::Error> {
        d.deserialize_seq(Capped::<S, S>::new(0))
            .map(|_| Skipped(PhantomData))
    }
}

/// Reads a list keeping its first `limit` elements as `T` and walking
/// over the rest as `S`; gives the kept ones and how many were walked
/// over. The length a message claims reserves nothing beyond the limit.
struct Capped<T, S> {
    limit: usize,
    shapes: PhantomData<(T, S)>,
}

impl<T, S> Capped<T, S> {
    fn new(limit: usize) -> Capped<T, S> {
        Capped {
            limit,
            shapes: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>, S: Deserialize<'de>> Visitor<'de> for Capped<T, S> {
    type Value = (Vec<T>, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(Vec<T>, usize), A::Error> {
        let mut kept = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.limit));
        while kept.len() < self.limit {
            match seq.next_element::<T>()? {
                Some(element) => kept.push(element),
                None => return Ok((kept, 0)),
            }
        }
        let mut skipped = 0;
        while seq.next_element::<S>()?.is_some() {
            skipped += 1;
        }
        Ok((kept, skipped))
    }
}
