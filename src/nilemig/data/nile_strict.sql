-- nilemig's emulation of Nile's DDL restrictions on plain PostgreSQL (local and scratch databases only).
-- An event trigger rejects, at the end of each DDL command, what Nile would reject, naming nilemig's rule.
-- It cannot see: CREATE ROLE / DATABASE / TABLESPACE (global objects fire no event trigger), CASCADE,
-- COPY, and Nile's transaction rules (tenant and shared writes together, several tenants at once).
-- An extension's own objects (CREATE EXTENSION runs functions, types, operators) are never rejected.
-- It also emulates Nile's tenant context: every table with a `tenant_id uuid` column gets a row-level
-- security policy, forced so that it binds the table's owner too, that shows and accepts only the rows of
-- the tenant in `nile.tenant_id`, and every row when that is unset or empty (Nile's global context).
-- The policy reads tenant_id through a whole-row value, so it does not depend on the column and a
-- migration may still drop or retype it; dropping it removes the policy.
CREATE OR REPLACE FUNCTION nile_ddl.nilemig_tenant_context(tbl regclass, scoped boolean) RETURNS void
LANGUAGE plpgsql AS $body$
DECLARE
    -- The tenant in context, or NULL in the global context (never set, RESET, or set to '').
    tenant constant text := $$NULLIF(current_setting('nile.tenant_id', true), '')::uuid$$;
    row_tenant text := format($$(to_jsonb(%I.*) ->> 'tenant_id')::uuid$$,
                              (SELECT relname FROM pg_class WHERE oid = tbl));
    installing constant text := current_setting('nilemig.installing', true);
BEGIN
    -- The statements below are DDL too: the event trigger must let them through.
    PERFORM set_config('nilemig.installing', 'on', true);
    IF scoped THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', tbl);
        EXECUTE format('CREATE POLICY nilemig_tenant_context ON %s USING (%s IS NULL OR %s = %s) WITH CHECK (%s IS NULL OR %s = %s)',
                       tbl, tenant, row_tenant, tenant, tenant, row_tenant, tenant);
    ELSE
        EXECUTE format('DROP POLICY nilemig_tenant_context ON %s', tbl);
        EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY', tbl);
    END IF;
    PERFORM set_config('nilemig.installing', COALESCE(installing, ''), true);
END
$body$;
CREATE OR REPLACE FUNCTION nile_ddl.nilemig_emulate_nile() RETURNS event_trigger LANGUAGE plpgsql AS $body$
DECLARE
    cmd record;
    col record;
    fk record;
    tenant_type text;
    target_tenant boolean;
    tenant_policy boolean;
BEGIN
    IF current_setting('nilemig.installing', true) = 'on' THEN
        RETURN;
    END IF;
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        CONTINUE WHEN cmd.in_extension;
        IF cmd.command_tag IN ('CREATE FUNCTION', 'CREATE PROCEDURE', 'CREATE TRIGGER', 'CREATE POLICY',
                               'CREATE EVENT TRIGGER', 'CREATE AGGREGATE') THEN
            RAISE EXCEPTION 'Nile does not support % (nilemig rule NILE007, emulated locally)', cmd.command_tag;
        END IF;
        IF cmd.object_type = 'index' AND cmd.command_tag = 'CREATE INDEX' THEN
            IF (SELECT reloptions FROM pg_class WHERE oid = cmd.objid) IS NOT NULL THEN
                RAISE EXCEPTION 'Nile does not support storage parameters on %  (nilemig rule NILE009, emulated locally)',
                    cmd.object_identity;
            END IF;
        END IF;
        CONTINUE WHEN cmd.object_type <> 'table' OR cmd.command_tag NOT IN ('CREATE TABLE', 'CREATE TABLE AS', 'ALTER TABLE');
        IF cmd.command_tag = 'CREATE TABLE' AND (SELECT reloptions FROM pg_class WHERE oid = cmd.objid) IS NOT NULL THEN
            RAISE EXCEPTION 'Nile does not support storage parameters on % (nilemig rule NILE009, emulated locally)',
                cmd.object_identity;
        END IF;
        SELECT format_type(atttypid, atttypmod) INTO tenant_type FROM pg_attribute
            WHERE attrelid = cmd.objid AND attname = 'tenant_id' AND NOT attisdropped;
        tenant_policy := EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = cmd.objid AND polname = 'nilemig_tenant_context');
        IF tenant_policy <> COALESCE(tenant_type = 'uuid' AND (SELECT relkind FROM pg_class WHERE oid = cmd.objid) IN ('r', 'p'), false) THEN
            PERFORM nile_ddl.nilemig_tenant_context(cmd.objid, NOT tenant_policy);
        END IF;
        CONTINUE WHEN tenant_type IS NULL;
        IF tenant_type <> 'uuid' THEN
            RAISE EXCEPTION '%.tenant_id is %: Nile requires uuid (nilemig rule NILE002, emulated locally)',
                cmd.object_identity, tenant_type;
        END IF;
        IF cmd.command_tag = 'CREATE TABLE' AND NOT EXISTS (
            SELECT 1 FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
            WHERE c.conrelid = cmd.objid AND c.contype = 'p' AND a.attname = 'tenant_id'
        ) THEN
            RAISE EXCEPTION 'tenant-aware table % needs tenant_id in its primary key (nilemig rule NILE001, emulated locally)',
                cmd.object_identity;
        END IF;
        FOR col IN SELECT a.attname FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = cmd.objid AND a.attnum > 0 AND NOT a.attisdropped
              AND (a.attidentity <> '' OR pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%')
        LOOP
            RAISE EXCEPTION '%.% uses a sequence: Nile does not support sequences on tenant-aware tables (nilemig rule NILE003, emulated locally)',
                cmd.object_identity, col.attname;
        END LOOP;
        FOR fk IN SELECT c.conname, c.confrelid, c.conkey, c.confkey FROM pg_constraint c
            WHERE c.conrelid = cmd.objid AND c.contype = 'f'
        LOOP
            CONTINUE WHEN fk.confrelid = 'public.tenants'::regclass;
            target_tenant := EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = fk.confrelid AND attname = 'tenant_id'
                                     AND NOT attisdropped);
            IF NOT target_tenant THEN
                RAISE EXCEPTION 'foreign key % from tenant-aware % to shared table %: Nile does not support it (nilemig rule NILE005, emulated locally)',
                    fk.conname, cmd.object_identity, fk.confrelid::regclass;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = cmd.objid AND attname = 'tenant_id'
                           AND attnum = ANY (fk.conkey)) THEN
                RAISE EXCEPTION 'foreign key % between tenant-aware tables must include tenant_id (nilemig rule NILE004, emulated locally)',
                    fk.conname;
            END IF;
        END LOOP;
    END LOOP;
END
$body$;
DROP EVENT TRIGGER IF EXISTS nilemig_emulate_nile;
CREATE EVENT TRIGGER nilemig_emulate_nile ON ddl_command_end EXECUTE FUNCTION nile_ddl.nilemig_emulate_nile();
-- Tables that were tenant-aware before the trigger existed (Nile's users.tenant_users, say).
SELECT nile_ddl.nilemig_tenant_context(a.attrelid, true) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attname = 'tenant_id' AND NOT a.attisdropped AND a.atttypid = 'uuid'::regtype AND c.relkind IN ('r', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = a.attrelid AND polname = 'nilemig_tenant_context');
