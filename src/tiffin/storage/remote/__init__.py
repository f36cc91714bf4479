"""Remote stores: share models and bundles through a shared directory, object storage or
a database registry, by URL.

    file:///mnt/models                   a shared directory (NFS, or a local one in tests)
    s3://bucket/prefix                   S3 or an S3-compatible server (MinIO, Ceph,
                                         SeaweedFS); gs://, az://... with their package
    sqlite:///registry.db                a database registry: the index in the database,
    postgresql://user:pw@host/db         artifacts in it too, or where ?artifacts=URL says

Push and pull move items between the local store and a remote one in chunks, in
parallel, resuming what was interrupted and verifying every byte pulled against the
digests the remote manifest records before anything is published locally
(``tiffin.storage.remote.transfer``). ``tiffin.models.ModelStore.push`` / ``pull`` and
``tiffin.bundles.BundleStore.push`` / ``pull`` are the calls to use.

Example:
    with open_remote("s3://team-models/prod") as remote:
        ModelStore.default().push("iris:latest", remote)
"""

from tiffin.storage.remote.store import (
    CHUNK_SIZE,
    CONCURRENCY,
    ENTRY_POINT_GROUP,
    ChunkList,
    Record,
    RemoteStore,
    open_remote,
    schemes,
)
from tiffin.storage.remote.transfer import (
    ItemProgress,
    Progress,
    Transfer,
    connect,
    pull_item,
    push_item,
)

__all__ = [
    "CHUNK_SIZE",
    "CONCURRENCY",
    "ENTRY_POINT_GROUP",
    "ChunkList",
    "ItemProgress",
    "Progress",
    "Record",
    "RemoteStore",
    "Transfer",
    "connect",
    "open_remote",
    "pull_item",
    "push_item",
    "schemes",
]
