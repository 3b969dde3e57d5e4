-- A generation introduced by a rotation is endorsed by the generation that was signing: a
-- certificate for the new CA's name and key, signed by the old CA. Clients that pinned an older
-- CA follow these endorsements to trust the new one, and nothing else.
ALTER TABLE ca_generations ADD COLUMN endorsement_pem TEXT;
