\echo Use "CREATE EXTENSION uuid-ossp" to load this file. \quit
-- nilemig's stand-in for uuid-ossp on servers built without libuuid (the local database's embedded
-- PostgreSQL): the same functions in SQL. v3 and v4 are exact; v1 and v1mc return random (version 4)
-- uuids, as no MAC address or clock sequence is at hand; v5 raises.
CREATE FUNCTION uuid_nil() RETURNS uuid IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$ SELECT '00000000-0000-0000-0000-000000000000'::uuid $$;
CREATE FUNCTION uuid_ns_dns() RETURNS uuid IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$ SELECT '6ba7b810-9dad-11d1-80b4-00c04fd430c8'::uuid $$;
CREATE FUNCTION uuid_ns_url() RETURNS uuid IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$ SELECT '6ba7b811-9dad-11d1-80b4-00c04fd430c8'::uuid $$;
CREATE FUNCTION uuid_ns_oid() RETURNS uuid IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$ SELECT '6ba7b812-9dad-11d1-80b4-00c04fd430c8'::uuid $$;
CREATE FUNCTION uuid_ns_x500() RETURNS uuid IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$ SELECT '6ba7b814-9dad-11d1-80b4-00c04fd430c8'::uuid $$;
CREATE FUNCTION uuid_generate_v4() RETURNS uuid VOLATILE PARALLEL SAFE LANGUAGE sql AS $$ SELECT gen_random_uuid() $$;
CREATE FUNCTION uuid_generate_v1() RETURNS uuid VOLATILE PARALLEL SAFE LANGUAGE sql AS $$ SELECT gen_random_uuid() $$;
CREATE FUNCTION uuid_generate_v1mc() RETURNS uuid VOLATILE PARALLEL SAFE LANGUAGE sql AS $$ SELECT gen_random_uuid() $$;
CREATE FUNCTION uuid_generate_v3(namespace uuid, name text) RETURNS uuid IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
  SELECT encode(set_byte(set_byte(h, 6, (get_byte(h,6) & 15) | 48), 8, (get_byte(h,8) & 63) | 128), 'hex')::uuid
  FROM (SELECT decode(md5(uuid_send(namespace) || convert_to(name,'UTF8')), 'hex') AS h) s $$;
-- Version 5 is SHA-1 based; PostgreSQL has no SHA-1 without OpenSSL, so it is not emulated: say so.
CREATE FUNCTION uuid_generate_v5(namespace uuid, name text) RETURNS uuid IMMUTABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'uuid_generate_v5() is not available in nilemig''s local uuid-ossp (SHA-1 needs OpenSSL); it works on Nile'
    USING HINT = 'use uuid_generate_v3() or gen_random_uuid() locally, or verify against a server that has the real uuid-ossp';
END $$;
