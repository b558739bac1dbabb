//! Deletes: DeleteObjects of up to 1000 keys, quiet (only failures come
//! back, each reported with its key).

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;

use super::{error, S3Store};

impl S3Store {
    pub(super) async fn delete_objects(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k.as_str()).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| StoreError::new(Op::Delete, "", ErrorKind::Other, e.to_string()))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| StoreError::new(Op::Delete, "", ErrorKind::Other, e.to_string()))?;
        let out = self
            .conn
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| self.err(Op::Delete, keys[0].as_str(), e))?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                let code = e.code().unwrap_or("Error");
                let kind = error::kind_for(code, 0);
                StoreError::new(Op::Delete, e.key().unwrap_or(""), kind, e.message().unwrap_or(code)).with_code(code)
            })
            .collect())
    }
}
