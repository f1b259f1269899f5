\echo Use "CREATE EXTENSION pgcrypto" to load this file. \quit
-- nilemig's stand-in for pgcrypto on servers built without OpenSSL (the local database's embedded
-- PostgreSQL): digest() and hmac() for md5 and sha224/256/384/512, gen_random_bytes(); gen_random_uuid()
-- is PostgreSQL's own. Not here: crypt(), gen_salt(), the pgp_* and encrypt/decrypt functions, sha1.
CREATE FUNCTION digest(bytea, text) RETURNS bytea IMMUTABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
  CASE lower($2)
    WHEN 'md5' THEN RETURN decode(md5($1), 'hex');
    WHEN 'sha224' THEN RETURN sha224($1);
    WHEN 'sha256' THEN RETURN sha256($1);
    WHEN 'sha384' THEN RETURN sha384($1);
    WHEN 'sha512' THEN RETURN sha512($1);
    ELSE RAISE EXCEPTION 'digest type % is not available in nilemig''s local pgcrypto (md5 and sha224 to sha512 are)', $2
      USING HINT = 'it works on Nile; locally, use one of those or a server that has the real pgcrypto';
  END CASE;
END $$;
CREATE FUNCTION digest(text, text) RETURNS bytea IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT digest(convert_to($1,'UTF8'), $2) $$;
CREATE FUNCTION gen_random_bytes(integer) RETURNS bytea VOLATILE STRICT PARALLEL SAFE LANGUAGE sql AS $$
  SELECT substr(string_agg(uuid_send(gen_random_uuid()), ''::bytea), 1, $1) FROM generate_series(1, ($1 + 15) / 16) $$;
CREATE FUNCTION hmac(bytea, bytea, text) RETURNS bytea IMMUTABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
DECLARE bs int := CASE WHEN lower($3) IN ('sha384','sha512') THEN 128 ELSE 64 END; k bytea := $1; ip bytea; op bytea; i int;
BEGIN
  IF length(k) > bs THEN k := digest(k, $3); END IF;
  k := k || decode(repeat('00', bs - length(k)), 'hex'); ip := k; op := k;
  FOR i IN 0..bs-1 LOOP ip := set_byte(ip, i, get_byte(k,i) # 54); op := set_byte(op, i, get_byte(k,i) # 92); END LOOP;
  RETURN digest(op || digest(ip || $2, $3), $3);
END $$;
CREATE FUNCTION hmac(text, text, text) RETURNS bytea IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT hmac(convert_to($1,'UTF8'), convert_to($2,'UTF8'), $3) $$;
