//! Test-only (the `conformance` feature, never in the shipped package): core's
//! read-only store conformance suite run in wasm against the store the
//! reader uses, core's `HttpStore` over the host's `fetch`.
//!
//! The suite writes through a second store between its reads; here that is
//! a folder the JavaScript test serves over HTTP, written through the
//! functions it passes in.

use bytes::Bytes;
use distributary_core::store::origin::content_token;
use distributary_core::store::{GetOptions, GetResult, ObjectMeta, Payload, PutMode, Store, StoreError, conformance};
use js_sys::{Function, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

/// Runs the read-only conformance checks against the store at `url`,
/// through `fetch` (or the global one); `folder` is the served folder as
/// `{ read(key): Uint8Array | undefined, write(key, bytes), remove(key) }`.
/// A failed check panics: its message goes to `console.error` and the call
/// rejects.
#[wasm_bindgen(js_name = runReadOnlyConformance)]
pub async fn run_read_only_conformance(url: String, folder: Object, fetch: Option<Function>) -> Result<(), JsError> {
    std::panic::set_hook(Box::new(|info| console_error(&info.to_string())));
    let reader = crate::fetch::open(&url, fetch).map_err(|e| JsError::new(&e.to_string()))?;
    let writer = JsFolder { url, folder };
    conformance::run_read_only(&writer, &reader).await;
    Ok(())
}

/// A writable store over the test's folder functions; an object's ETag is
/// its content token.
#[derive(Debug)]
struct JsFolder {
    url: String,
    folder: Object,
}

impl JsFolder {
    fn call(&self, op: &'static str, key: &str, args: &[JsValue]) -> Result<JsValue, StoreError> {
        let failed =
            |e: JsValue| StoreError::Backend { op, key: key.to_string(), message: format!("{e:?}"), retryable: false };
        let function = Reflect::get(&self.folder, &JsValue::from_str(op)).map_err(failed)?;
        let function = function.dyn_into::<Function>().map_err(failed)?;
        let args: js_sys::Array = std::iter::once(JsValue::from_str(key)).chain(args.iter().cloned()).collect();
        function.apply(&self.folder, &args).map_err(failed)
    }

    fn read(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let value = self.call("read", key, &[])?;
        Ok((!value.is_undefined()).then(|| Bytes::from(value.unchecked_into::<Uint8Array>().to_vec())))
    }
}

#[async_trait::async_trait(?Send)]
impl Store for JsFolder {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let bytes = self.read(key)?.ok_or_else(|| StoreError::NotFound { op: "get", key: key.to_string() })?;
        let size = bytes.len() as u64;
        let range = match options.range {
            Some(asked) => asked.resolve(size).ok_or_else(|| StoreError::InvalidRange {
                key: key.to_string(),
                range: asked.to_http_header(),
                size,
            })?,
            None => 0..size,
        };
        let meta = ObjectMeta { key: key.to_string(), size, etag: Some(content_token(&bytes)) };
        if options.if_none_match.is_some() && options.if_none_match == meta.etag {
            return Err(StoreError::NotModified { key: key.to_string() });
        }
        let body = bytes.slice(range.start as usize..range.end as usize);
        Ok(GetResult { meta, range, body: Box::pin(futures::stream::once(async move { Ok(body) })) })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let bytes = self.read(key)?.ok_or_else(|| StoreError::NotFound { op: "head", key: key.to_string() })?;
        Ok(ObjectMeta { key: key.to_string(), size: bytes.len() as u64, etag: Some(content_token(&bytes)) })
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        // wasm has no file payloads.
        let Payload::Bytes(bytes) = payload;
        let current = self.read(key)?.map(|current| content_token(&current));
        match (&mode, current) {
            (PutMode::Create, Some(_)) => return Err(StoreError::AlreadyExists { key: key.to_string() }),
            (PutMode::Update(etag), current) if current.as_ref() != Some(etag) => {
                return Err(StoreError::PreconditionFailed { key: key.to_string() });
            }
            _ => {}
        }
        self.call("write", key, &[Uint8Array::from(&bytes[..]).into()])?;
        Ok(ObjectMeta { key: key.to_string(), size: bytes.len() as u64, etag: Some(content_token(&bytes)) })
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            self.call("remove", key, &[])?;
        }
        Ok(())
    }

    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // The suite's read-only checks never list.
        Err(StoreError::Unsupported { op: "list", url: self.url.clone() })
    }

    fn url(&self) -> &str {
        &self.url
    }
}
