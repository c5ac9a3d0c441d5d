"""TPM trust (manufacturer CAs, allowed EKs) and trusted clusters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('allowed_eks',
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('public_pem', sa.Text(), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=False),
    sa.Column('added_at', sa.DateTime(), nullable=False),
    sa.Column('added_by', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('fingerprint_sha256', name=op.f('pk_allowed_eks'))
    )
    op.create_table('clusters',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=False),
    sa.Column('policy', sa.Text(), nullable=False),
    sa.Column('token_lifetime_seconds', sa.Integer(), nullable=False),
    sa.Column('attestation_interval_seconds', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clusters')),
    sa.UniqueConstraint('name', name=op.f('uq_clusters_name'))
    )
    op.create_table('tpm_cas',
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=512), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('is_root', sa.Boolean(), nullable=False),
    sa.Column('not_after', sa.DateTime(), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=False),
    sa.Column('added_at', sa.DateTime(), nullable=False),
    sa.Column('added_by', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('fingerprint_sha256', name=op.f('pk_tpm_cas'))
    )


def downgrade() -> None:
    op.drop_table('tpm_cas')
    op.drop_table('clusters')
    op.drop_table('allowed_eks')
