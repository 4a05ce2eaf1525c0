-- Session store, version 1: fixed tables keyed by arm and session (no table per session).
CREATE TABLE sessions (
    arm_id      text NOT NULL,
    session_id  text NOT NULL,
    status      text NOT NULL DEFAULT 'open',
    created_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    PRIMARY KEY (arm_id, session_id)
);
CREATE INDEX sessions_by_session_id ON sessions (session_id);

CREATE TABLE images (
    arm_id      text NOT NULL,
    session_id  text NOT NULL,
    image_name  text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('proc', 'after')),
    base_pw     integer,
    width       integer NOT NULL,
    height      integer NOT NULL,
    uri         text,
    sha256      text NOT NULL,
    detected    boolean NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (arm_id, session_id, image_name, kind),
    FOREIGN KEY (arm_id, session_id) REFERENCES sessions ON DELETE CASCADE
);

CREATE TABLE objects (
    arm_id      text NOT NULL,
    session_id  text NOT NULL,
    image_name  text NOT NULL,
    box_index   integer NOT NULL,
    class_id    smallint NOT NULL,
    label       text NOT NULL,
    score       real NOT NULL,
    x1 real NOT NULL, y1 real NOT NULL, x2 real NOT NULL, y2 real NOT NULL,
    servo0      double precision,
    servo1      double precision,
    object_no   integer,   -- merged physical object (session end)
    cluster     integer,   -- k-means cluster of an item's embedding
    PRIMARY KEY (arm_id, session_id, image_name, box_index),
    FOREIGN KEY (arm_id, session_id) REFERENCES sessions ON DELETE CASCADE
);

CREATE TABLE commands (
    arm_id      text NOT NULL,
    session_id  text NOT NULL,
    seq         integer NOT NULL,
    item_servo0 double precision NOT NULL,
    item_servo1 double precision NOT NULL,
    container_servo0 double precision NOT NULL,
    container_servo1 double precision NOT NULL,
    cluster     integer NOT NULL,
    PRIMARY KEY (arm_id, session_id, seq),
    FOREIGN KEY (arm_id, session_id) REFERENCES sessions ON DELETE CASCADE
);
