"""Track events and playlist edits: what is accepted, what each rejection says, and how an edit
changes a playlist's features (no services needed)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from segue.features.playlist_features import edited_playlist_features, playlist_query_features
from segue.settings import FeatureSettings
from segue.streaming.events import DeadLetter, EventError, PlaylistEditEvent, new_event, new_playlist_edit, parse_event
from segue.streaming.publish import EventFileError, event_key, read_event_file

TRACK = {"track_uri": "spotify:track:" + "a" * 22, "track_name": "Song", "artist_uri": "spotify:artist:" + "b" * 22,
         "artist_name": "Artist", "album_uri": "spotify:album:" + "c" * 22, "album_name": "Album",
         "duration_ms": 200_000, "popularity": 40, "artist_genres": ["pop"]}


def raw(doc) -> bytes:
    return json.dumps(doc).encode()


def test_a_valid_event_parses_with_unknown_fields_left_null():
    event = parse_event(raw(new_event(TRACK)))
    assert event.track.track_uri == TRACK["track_uri"] and event.track.tempo is None
    assert event.event_time.tzinfo is not None and event.event_time_us > 1_700_000_000_000_000


@pytest.mark.parametrize("mutate, says", [
    (lambda e: e.pop("event_time"), "event_time: Field required"),
    (lambda e: e.update(event_time="2026-11-22T10:00:00"), "event_time: Input should have timezone info"),
    (lambda e: e["track"].update(popularity=-1), "track.popularity: Input should be greater than or equal to 0"),
    (lambda e: e["track"].update(track_uri="spotify:album:" + "a" * 22), "track.track_uri: String should match"),
    (lambda e: e["track"].update(colour="blue"), "track.colour: Extra inputs are not permitted"),
    (lambda e: e.update(schema_version="1"), "schema_version '1' is not supported"),
])
def test_each_rejection_names_the_field_and_the_rule(mutate, says):
    event = new_event(dict(TRACK), event_id="e-1")
    mutate(event)
    with pytest.raises(EventError) as caught:
        parse_event(raw(event))
    assert says in str(caught.value)


def test_values_no_store_can_hold_and_far_future_times_are_rejected():
    with pytest.raises(EventError, match="track.artist_followers: Input should be less than or equal to"):
        parse_event(raw(new_event({**TRACK, "artist_followers": 10**30})))
    now = datetime.now(timezone.utc)
    ahead = raw(new_event(TRACK, event_time=now + timedelta(hours=2)))
    with pytest.raises(EventError, match=r"ahead of this consumer's clock .*stream.max_event_ahead_s"):
        parse_event(ahead, max_ahead_s=3600, now=now)
    assert parse_event(ahead, max_ahead_s=3 * 3600, now=now).track.track_uri == TRACK["track_uri"]


def test_non_events_are_rejected_with_a_reason():
    for value, says in ((None, "tombstone"), (b"\xff\xfe", "not JSON"), (b"42", "not a JSON object")):
        with pytest.raises(EventError, match=says):
            parse_event(value)


def test_a_dead_letter_keeps_the_payload_even_when_it_is_not_text():
    letter = json.loads(DeadLetter("not JSON", "t", 3, 17, b"k", b"\xff\x00").to_json())
    assert (letter["partition"], letter["offset"], letter["payload_encoding"]) == (3, 17, "base64")
    assert letter["payload"] == "/wA=" and letter["reason"] == "not JSON"


def test_an_event_file_with_a_bad_line_sends_nothing_and_says_which_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(TRACK) + "\n" + json.dumps({**TRACK, "duration_ms": 0}) + "\n")
    with pytest.raises(EventFileError, match=r"events.jsonl:2: .*track.duration_ms"):
        read_event_file(path)
    path.write_text(json.dumps(TRACK) + "\n\n" + json.dumps(new_event(TRACK)) + "\n")
    assert [e["schema_version"] for e in read_event_file(path)] == [1, 1]


def uri(kind: str, i: int) -> str:
    return f"spotify:{kind}:{i:022d}"


def test_a_playlist_edit_is_validated_field_by_field():
    edit = parse_event(raw(new_playlist_edit(17, added=[uri("track", 1)], name="new")), kind=PlaylistEditEvent)
    assert (edit.pid, edit.added_track_uris, edit.removed_track_uris, edit.name) == (17, [uri("track", 1)], [], "new")
    for doc, says in (
            (new_playlist_edit(17), "event: Value error, an edit adds tracks, removes tracks or renames"),
            (new_playlist_edit(-1, name="x"), "pid: Input should be greater than or equal to 0"),
            (new_playlist_edit(17, removed=["spotify:track:short"]), "removed_track_uris.0: String should match"),
            ({**new_playlist_edit(17, name="x"), "tracks": []}, "tracks: Extra inputs are not permitted")):
        with pytest.raises(EventError, match=says):
            parse_event(raw(doc), kind=PlaylistEditEvent)


def test_bare_edits_in_a_file_become_events_keyed_by_pid(tmp_path):
    path = tmp_path / "edits.jsonl"
    path.write_text(json.dumps({"pid": 3, "added_track_uris": [uri("track", 1)]}) + "\n"
                    + json.dumps({"pid": 4, "colour": "blue"}) + "\n")
    with pytest.raises(EventFileError, match=r"edits.jsonl:2: unknown field\(s\) \['colour'\]"):
        read_event_file(path, kind=PlaylistEditEvent)
    path.write_text(json.dumps({"pid": 3, "added_track_uris": [uri("track", 1)]}) + "\n")
    [event] = read_event_file(path, kind=PlaylistEditEvent)
    assert event["schema_version"] == 1 and event_key(event) == b"3"


def test_an_edited_playlist_has_the_features_of_its_new_track_list():
    """Edits applied to a playlist's features give what the features of the resulting track list
    are, built the way a cold request's are (the batch job's definitions), besides the edit count."""
    sequences = FeatureSettings(recent_tracks=3, playlist_tracks=6)
    tracks = {uri("track", i): {"artist_uri": uri("artist", i % 4), "album_uri": uri("album", i % 5),
                                "duration_ms": 1000 + i} for i in range(20)}
    start = [uri("track", i) for i in range(5)]
    stored = {k: v[0] for k, v in playlist_query_features("old", start, tracks, sequences).items()}
    edits = [([uri("track", 10), uri("track", 11)], [uri("track", 4)], None),
             ([uri("track", 12)], [uri("track", 0), uri("track", 11)], "renamed")]
    after = edited_playlist_features(stored, edits, tracks, sequences)
    final = [uri("track", i) for i in (1, 2, 3, 10, 12)]
    expected = {k: v[0] for k, v in playlist_query_features("renamed", final, tracks, sequences).items()}
    assert after == {**expected, "num_edits": stored["num_edits"] + 2}
    assert after["recent_artist_uris"] == [uri("artist", 3), uri("artist", 2), uri("artist", 0)]
    new = edited_playlist_features(None, [([uri("track", 7)], [], None)], tracks, sequences)
    assert (new["num_tracks"], new["num_edits"], new["name"], new["duration_ms"]) == (1, 1, "", 1007)


def test_cluster_settings_reach_both_clients_and_the_password_stays_out_of_dumps():
    from segue.settings import KafkaSettings, SegueSettings, StreamSettings
    from segue.streaming.beam_pipeline import ReadStreamMessages
    from segue.streaming.kafka_clients import connection_config

    kafka = KafkaSettings(bootstrap_servers="a:9093,b:9093", security_protocol="SASL_SSL",
                          sasl_mechanism="SCRAM-SHA-512", sasl_username="indexer", sasl_password="p4ss")
    settings = SegueSettings(kafka=kafka, stream=StreamSettings(topic="t"))
    config = connection_config(kafka)
    assert config["bootstrap_servers"] == ["a:9093", "b:9093"] and config["sasl_plain_password"] == "p4ss"
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "p4ss" not in settings.model_dump_json() and "p4ss" not in repr(settings)
    # The Beam job graph carries the consumer's properties: never the password, only a reference
    # that Kafka's FileConfigProvider resolves on the worker, and no graph at all without one.
    with pytest.raises(ValueError, match="kafka.sasl_jaas_file"):
        ReadStreamMessages(settings).consumer_config()
    on_workers = settings.model_copy(update={"kafka": kafka.model_copy(update={"sasl_jaas_file": "/run/secrets/kafka"})})
    java = ReadStreamMessages(on_workers).consumer_config()
    assert java["bootstrap.servers"] == "a:9093,b:9093" and java["sasl.mechanism"] == "SCRAM-SHA-512"
    assert java["sasl.jaas.config"] == "${file:/run/secrets/kafka:sasl.jaas.config}"
    assert java["config.providers.file.class"] == "org.apache.kafka.common.config.provider.FileConfigProvider"
    assert "p4ss" not in json.dumps(java)
