//! [`SpooledStore`] as an [`ObjectStore`]: puts go through the spool's
//! write discipline (put-if-absent only, durable before `Ok`); reads see
//! spooled objects; every kind of overwrite is refused.

use super::*;

#[async_trait]
impl ObjectStore for SpooledStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if opts.mode != PutMode::Create {
            return Err(unsupported("put without PutMode::Create"));
        }
        if !opts.attributes.is_empty() || !opts.tags.encoded().is_empty() {
            return Err(unsupported("put with attributes or tags"));
        }
        let started = now();
        let result = self.durable_put(location, payload).await;
        if result.is_ok() {
            self.metrics
                .put_seconds
                .observe(now().saturating_duration_since(started).as_secs_f64());
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(unsupported("multipart upload"))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if let Some(entry) = self.spooled(location) {
            match self.get_spooled(&entry, &options) {
                // Backfilled and removed between the lookup and the open:
                // the store has it now.
                Err(object_store::Error::NotFound { .. }) => {}
                r => return r,
            }
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(unsupported("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let spooled = self.spooled_under(prefix);
        let skip: HashSet<Path> = spooled.iter().map(|m| m.location.clone()).collect();
        self.inner
            .list(prefix)
            .try_filter(move |m| std::future::ready(!skip.contains(&m.location)))
            .chain(stream::iter(spooled.into_iter().map(Ok)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let spooled = self.spooled_under(prefix);
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        let root = Path::default();
        let base = prefix.unwrap_or(&root);
        let mut objects: HashSet<Path> =
            result.objects.iter().map(|m| m.location.clone()).collect();
        let mut dirs: HashSet<Path> = result.common_prefixes.iter().cloned().collect();
        for meta in spooled {
            let Some((first, deeper)) = meta.location.prefix_match(base).and_then(|mut parts| {
                let first = parts.next()?;
                Some((first.as_ref().to_owned(), parts.next().is_some()))
            }) else {
                continue;
            };
            if deeper {
                let dir = base.clone().join(first.as_str());
                if dirs.insert(dir.clone()) {
                    result.common_prefixes.push(dir);
                }
            } else if objects.insert(meta.location.clone()) {
                result.objects.push(meta);
            } else if let Some(o) = result
                .objects
                .iter_mut()
                .find(|o| o.location == meta.location)
            {
                *o = meta;
            }
        }
        Ok(result)
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(unsupported("copy"))
    }
}

impl std::fmt::Display for SpooledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (spool {})", self.inner, self.dir.display())
    }
}

// --- spool files (blocking; called through spawn_blocking) -------------------
