-- nilemig's emulation of Nile's DDL restrictions on plain PostgreSQL (local and scratch databases only).
-- An event trigger rejects, at the end of each DDL command, what Nile would reject, naming nilemig's rule.
-- It cannot see: CREATE ROLE / DATABASE / TABLESPACE (global objects fire no event trigger), CASCADE,
-- COPY, and Nile's transaction rules (tenant and shared writes together, several tenants at once).
CREATE OR REPLACE FUNCTION nile_ddl.nilemig_emulate_nile() RETURNS event_trigger LANGUAGE plpgsql AS $body$
DECLARE
    cmd record;
    col record;
    fk record;
    tenant_type text;
    target_tenant boolean;
BEGIN
    IF current_setting('nilemig.installing', true) = 'on' THEN
        RETURN;
    END IF;
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
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
        CONTINUE WHEN cmd.object_type <> 'table' OR cmd.command_tag NOT IN ('CREATE TABLE', 'ALTER TABLE');
        IF cmd.command_tag = 'CREATE TABLE' AND (SELECT reloptions FROM pg_class WHERE oid = cmd.objid) IS NOT NULL THEN
            RAISE EXCEPTION 'Nile does not support storage parameters on % (nilemig rule NILE009, emulated locally)',
                cmd.object_identity;
        END IF;
        SELECT format_type(atttypid, atttypmod) INTO tenant_type FROM pg_attribute
            WHERE attrelid = cmd.objid AND attname = 'tenant_id' AND NOT attisdropped;
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
