//! The `key1=value1,key2=value2` lists of `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`
//! (values percent-decoded, as the OpenTelemetry specification says; members without a key or an
//! `=` are skipped).

/// The members of a `key=value` list, in order.
pub fn parse_pairs(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|member| {
            let (key, value) = member.split_once('=')?;
            let key = key.trim();
            if key.is_empty() {
                return None;
            }
            Some((key.to_string(), percent_decode(value.trim())))
        })
        .collect()
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits is kept as it is, and bytes that do
/// not make UTF-8 are replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_specifications_examples() {
        assert_eq!(
            parse_pairs("api-key=key,other-config-value=value"),
            vec![
                ("api-key".into(), "key".into()),
                ("other-config-value".into(), "value".into())
            ]
        );
        assert_eq!(
            parse_pairs("service.namespace=tenant%20a, deployment.environment = prod ,bad,=x"),
            vec![
                ("service.namespace".into(), "tenant a".into()),
                ("deployment.environment".into(), "prod".into())
            ]
        );
        assert_eq!(
            parse_pairs("a=100%,b=%zz"),
            vec![("a".into(), "100%".into()), ("b".into(), "%zz".into())]
        );
        assert_eq!(parse_pairs(""), vec![]);
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panicking(s in "\\PC*") {
            for (k, _) in parse_pairs(&s) {
                prop_assert!(!k.is_empty() && !k.contains(',') && !k.contains('='));
            }
        }

        #[test]
        fn plain_pairs_read_back(pairs in proptest::collection::vec(("[a-z.]{1,8}", "[A-Za-z0-9 ]{0,8}"), 0..5)) {
            let text = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let want: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.clone(), v.trim().to_string())).collect();
            prop_assert_eq!(parse_pairs(&text), want);
        }
    }
}
