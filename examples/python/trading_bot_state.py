"""Seed 003, the trading bot's ``save_state`` / ``load_state``, on statesafe.

The bot wrote ``json.dump(asdict(state), f)`` straight into ``trading_state.json``: a
crash mid-save left a file the bot could not start from. The audit's fix (temp file,
fsync, rename) still missed the directory fsync, the lock, and a fixed ``.tmp`` name
shared by concurrent writers; its proposed validation "fixed" bad states by resetting
the balance to defaults. Here: atomic and durable commits, a rule checked before every
commit (a bad state is refused, never written, never reset), backups, and the same
dataclass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import statesafe


@dataclass
class TradingState:
    current_balance: float = 0.0
    peak_balance: float = 0.0
    daily_pnl: float = 0.0
    trades_today: int = 0
    last_trade: Optional[str] = None


def _check(state: TradingState) -> Optional[str]:
    if state.current_balance < 0:
        return "current_balance must not be negative"
    if state.peak_balance < state.current_balance:
        return "peak_balance must be at least current_balance"
    return None


def open_state(state_dir: str) -> statesafe.Store[TradingState]:
    os.makedirs(state_dir, exist_ok=True)
    return statesafe.open(os.path.join(state_dir, "trading_state.json"), model=TradingState,
                          default=TradingState(), validate=_check, backups=24)


def save_state(store: statesafe.Store[TradingState], state: TradingState) -> None:
    store.replace(state)


def load_state(store: statesafe.Store[TradingState]) -> TradingState:
    return store.get()


def record_trade(store: statesafe.Store[TradingState], pnl: float, when: str) -> TradingState:
    """Applies one trade's result atomically (read, change and write under the lock)."""
    with store.transaction() as state:
        state.current_balance += pnl
        state.peak_balance = max(state.peak_balance, state.current_balance)
        state.daily_pnl += pnl
        state.trades_today += 1
        state.last_trade = when
    return state


if __name__ == "__main__":
    store = open_state("state")
    state = record_trade(store, 12.5, "2026-01-16T10:00:00Z")
    print(f"balance {state.current_balance:.2f}, peak {state.peak_balance:.2f}")
