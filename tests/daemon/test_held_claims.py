from daemon.held_claims import HeldClaims


def test_held_and_owed_claims_are_renewed_until_settled() -> None:
    claims = HeldClaims()
    claims.hold([1, 2, 3])
    claims.let_go(2)
    claims.owe(3, {"inbox_path": "a.jpg"})
    claims.let_go(3)  # its thread is done with it; the give-back is still owed
    assert claims.renewable() == [1, 3]
    assert claims.owed() == [(3, {"inbox_path": "a.jpg"})]
    claims.settled(3)
    assert claims.renewable() == [1]
    assert len(claims) == 1


def test_an_orphan_is_a_claim_no_thread_held_at_two_checks_in_a_row() -> None:
    claims = HeldClaims()
    claims.hold([1])
    assert claims.orphans([1, 2]) == []  # 2 may be a claim its worker is about to hold
    claims.hold([2])
    assert claims.orphans([1, 2, 5]) == []
    assert claims.orphans([1, 2, 5]) == [5]
    assert claims.orphans([1, 2]) == []  # reported once
