//! What the config accepts as an HTTP URL or request header of an alert
//! sink: the checks `healer check` runs, and the parsing the running sink
//! uses, so both agree on what is valid.

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;

/// `text` as a sink URL: http or https, with a host. The error never
/// quotes the URL (it may hold a password).
pub fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text)
        .map_err(|err| format!("is not a URL ({err}); write e.g. \"http://127.0.0.1:9093\""))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must be http or https, not {:?}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("names no host; write e.g. \"http://127.0.0.1:9093\"".to_owned());
    }
    Ok(url)
}

/// Whether `name: value` can be sent as a request header. The error never
/// quotes the value (it may be a secret).
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    header(name, value).map(drop)
}

/// `name: value` as a request header, marked sensitive. The error never
/// quotes the value.
pub(crate) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| format!("the value of {name} is not a valid header value"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_with_a_host_are_sinks() {
        assert!(check_url("http://127.0.0.1:9093").is_ok());
        assert!(check_url("https://user:pw@am.example/prefix/").is_ok());
        let ftp = check_url("ftp://127.0.0.1/").unwrap_err();
        assert_eq!(ftp, "must be http or https, not \"ftp\"");
        let relative = check_url("127.0.0.1:9093").unwrap_err();
        assert!(relative.contains("write e.g."), "{relative}");
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn header_errors_name_the_header_but_never_quote_its_value() {
        assert!(check_header("X-Key", "s3cret").is_ok());
        assert!(check_header("bad header", "x").is_err());
        let error = check_header("X-Key", "line\nbreak-s3cret").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        assert!(error.contains("x-key"), "{error}");
    }
}
