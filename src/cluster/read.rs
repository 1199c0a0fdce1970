//! The full read at the start of a session, in pages at one revision: the learned sessions under
//! the prefix can run to hundreds of thousands of keys, more than one gRPC message may carry.

use super::connect::call;
use etcd_client::{Client, GetOptions, KeyValue};

const PAGE: i64 = 2000;

/// Every key under `prefix` as of one revision, and that revision (the watch starts after it).
pub(super) async fn read_prefix(
    client: &mut Client,
    prefix: &str,
) -> Result<(i64, Vec<KeyValue>), String> {
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut all = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut page = call("read", client.get(from.clone(), Some(options))).await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        let Some(last) = kvs.last() else { break };
        // The next page starts just after the last key read.
        from = last.key().to_vec();
        from.push(0);
        all.extend(kvs);
        if !more {
            break;
        }
    }
    Ok((revision, all))
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_range_end_covers_the_prefix_only() {
        assert_eq!(super::prefix_end(b"/qlik-lb/"), b"/qlik-lb0".to_vec());
        assert_eq!(super::prefix_end(b"a\xff"), b"b".to_vec());
    }
}
