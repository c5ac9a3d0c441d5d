"""Attestation records by age, for the retention sweep (`attestation_history_days`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_attestations_at', 'attestations', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_attestations_at', table_name='attestations')
