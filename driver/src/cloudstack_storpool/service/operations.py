"""The operation table: every driver function the service publishes, one line each.

To publish a driver function, add one `operation("METHOD /path/{param}", module.function)` line.
Parameters, validation, the response and the OpenAPI entry are all derived from the function's
signature (spec.py). `job=True` for anything that may wait on a KVM host's copy (a template
fill, a snapshot backup, a copy from secondary storage, a resize a running VM must see) or on
many StorPool objects (GC), so the caller polls instead of holding a request open.

Path placeholders are parameter names; GET and DELETE take the remaining parameters from the
query string, POST from a JSON body. A pool is always named by its CloudStack uuid or name.
"""

from __future__ import annotations

from cloudstack_storpool.driver import (
    adopt,
    connect,
    encryption,
    extract,
    gc,
    ha,
    hostconnect,
    hosts,
    identity,
    migration,
    pools,
    recovery,
    resize,
    snapshotcopy,
    snapshots,
    stats,
    templates,
    vmsnapshots,
    volumes,
)
from cloudstack_storpool.service.spec import Operation, OperationTable, operation

OPERATIONS: tuple[Operation, ...] = (
    # -- pools ---------------------------------------------------------------------------------
    operation("GET /v1/pools", pools.list_pools, name="list_pools"),
    operation("POST /v1/pools", pools.register, name="register_pool", bind=("pools_file",), subject="uuid"),
    operation("GET /v1/pools/{pool}", pools.describe, name="describe_pool"),
    operation("GET /v1/pools/{pool}/contents", pools.contents, name="pool_contents"),
    operation("DELETE /v1/pools/{pool}", pools.remove, name="remove_pool", bind=("pools_file",)),
    operation("POST /v1/pools/{pool}/adopt", adopt.adopt, name="adopt_pool", job=True, exclude=("kinds",)),
    # -- template cache ------------------------------------------------------------------------
    operation("POST /v1/pools/{pool}/templates", templates.ensure_cached, name="cache_template", job=True,
              exclude=("known_missing",)),
    operation("GET /v1/pools/{pool}/templates", templates.list_cached, name="list_cached_templates"),
    operation("GET /v1/pools/{pool}/templates/{template_uuid}", templates.cached, name="cached_template"),
    operation("DELETE /v1/pools/{pool}/templates/{template_uuid}", templates.drop, name="drop_cached_template"),
    operation("DELETE /v1/templates/{template_uuid}", gc.drop_template, name="template_deleted"),
    # -- volumes -------------------------------------------------------------------------------
    operation("POST /v1/volumes", volumes.create, name="create_volume"),
    operation("POST /v1/volumes/from-template", volumes.create_from_template, name="create_volume_from_template",
              job=True),
    operation("POST /v1/volumes/from-snapshot", snapshots.volume_from_snapshot, name="create_volume_from_snapshot",
              job=True, subject="volume_uuid"),
    operation("POST /v1/volumes/import", migration.import_volume, name="import_volume", job=True),
    operation("GET /v1/volumes/{volume_uuid}", identity.get, name="get_volume"),
    operation("DELETE /v1/volumes/{volume_uuid}", volumes.delete, name="delete_volume"),
    operation("POST /v1/volumes/{volume_uuid}/offering", volumes.change_offering, name="change_volume_offering"),
    operation("POST /v1/volumes/{volume_uuid}/attached", volumes.attached, name="volume_attached"),
    operation("POST /v1/volumes/{volume_uuid}/detached", volumes.detached, name="volume_detached"),
    operation("POST /v1/volumes/{volume_uuid}/resize", resize.resize_volume, name="resize_volume", job=True),
    operation("POST /v1/volumes/{volume_uuid}/revert", snapshots.revert_snapshot, name="revert_volume"),
    operation("POST /v1/volumes/{volume_uuid}/migrate", migration.migrate, name="migrate_volume", job=True),
    # -- VMs (bookkeeping) ---------------------------------------------------------------------
    operation("POST /v1/vms/{vm_id}/tags-changed", volumes.vm_tags_changed, name="vm_tags_changed"),
    operation("POST /v1/vms/{vm_id}/destroyed", volumes.vm_destroyed, name="vm_destroyed"),
    # -- snapshots -----------------------------------------------------------------------------
    operation("POST /v1/snapshots", snapshots.take_snapshot, name="take_snapshot", job=True),
    operation("DELETE /v1/snapshots/{snapshot_uuid}", snapshots.delete_snapshot, name="delete_snapshot"),
    operation("POST /v1/snapshots/{snapshot_uuid}/copy", snapshotcopy.copy_snapshot, name="copy_snapshot", job=True),
    operation("POST /v1/templates/from-snapshot", snapshots.template_from_snapshot,
              name="create_template_from_snapshot", job=True),
    # -- VM snapshots --------------------------------------------------------------------------
    operation("POST /v1/vm-snapshots", vmsnapshots.take_vm_snapshot, name="take_vm_snapshot", subject="vm_snapshot_uuid"),
    operation("POST /v1/vm-snapshots/{vm_snapshot_uuid}/revert", vmsnapshots.revert_vm_snapshot,
              name="revert_vm_snapshot", subject="vm_snapshot_uuid"),
    operation("DELETE /v1/vm-snapshots/{vm_snapshot_uuid}", vmsnapshots.delete_vm_snapshot,
              name="delete_vm_snapshot", subject="vm_snapshot_uuid"),
    # -- KVM hosts: disks, migration, HA hand-over, host connect (driver/connect.py, ha.py, ...) --
    operation("POST /v1/hosts/{host_id}/connected", hostconnect.host_connected, name="host_connected"),
    operation("POST /v1/hosts/{host_id}/disks/connect", connect.connect_physical_disk, name="connect_physical_disk"),
    operation("POST /v1/hosts/{host_id}/disks/disconnect", connect.disconnect_physical_disk,
              name="disconnect_physical_disk"),
    operation("POST /v1/hosts/{host_id}/disks/disconnect-by-path", connect.disconnect_physical_disk_by_path,
              name="disconnect_physical_disk_by_path"),
    operation("POST /v1/vms/{vm_id}/hand-over", ha.hand_over, name="hand_over_vm"),
    operation("POST /v1/vms/{vm_id}/stopped", connect.vm_stopped, name="vm_stopped"),
    operation("POST /v1/vms/{vm_id}/migration/prepare", connect.prepare_migration, name="prepare_migration"),
    operation("POST /v1/vms/{vm_id}/migration/finish", connect.finish_migration, name="finish_migration"),
    operation("POST /v1/volumes/{volume_uuid}/encryption", encryption.set_volume_encryption,
              name="set_volume_encryption", job=True),
    operation("POST /v1/volumes/{volume_uuid}/extract", extract.extract_volume, name="extract_volume", job=True),
    # -- garbage collection --------------------------------------------------------------------
    operation("POST /v1/gc", gc.run, name="gc", job=True),
    operation("POST /v1/heartbeat/check", hosts.check_hosts, name="heartbeat_check"),
    operation("GET /v1/gc/plan", gc.plan, name="gc_plan", exclude=("report",)),
    # -- statistics (served from the periodic collections) -------------------------------------
    operation("GET /v1/stats/pools", stats.pool_stats, name="pool_stats", bind=("cache",), subject="pool"),
    operation("GET /v1/stats/volumes", stats.volume_stats, name="volume_stats", bind=("cache",)),
    # -- deleted volumes (delay-delete backups) ------------------------------------------------
    operation("GET /v1/deleted-volumes", recovery.deleted, name="list_deleted_volumes", subject="pool"),
    operation("GET /v1/deleted-volumes/expired", recovery.expired, name="expired_deleted_volumes", bind=("tracker",)),
    operation("POST /v1/deleted-volumes/{volume_uuid}/restore", recovery.restore, name="restore_volume"),
)

TABLE = OperationTable(OPERATIONS)
