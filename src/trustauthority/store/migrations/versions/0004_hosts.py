"""Hosts, enrollments, join tokens, attestation nonces and the attestation history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('enrollments',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('ek_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('ek_public', sa.LargeBinary(), nullable=False),
    sa.Column('ek_certificate_pem', sa.Text(), nullable=True),
    sa.Column('ak_public', sa.LargeBinary(), nullable=False),
    sa.Column('ak_qualified_name', sa.LargeBinary(), nullable=False),
    sa.Column('hostname', sa.String(length=128), nullable=False),
    sa.Column('facts', sa.Text(), nullable=False),
    sa.Column('join_token_id', sa.String(length=32), nullable=True),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollments'))
    )
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrollments_ek_fingerprint'), ['ek_fingerprint'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrollments_expires_at'), ['expires_at'], unique=False)

    op.create_table('hosts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('ek_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('ek_public', sa.LargeBinary(), nullable=False),
    sa.Column('ek_certificate_pem', sa.Text(), nullable=True),
    sa.Column('ak_public', sa.LargeBinary(), nullable=False),
    sa.Column('ak_qualified_name', sa.LargeBinary(), nullable=False),
    sa.Column('principal_id', sa.String(length=36), nullable=False),
    sa.Column('cluster_id', sa.String(length=36), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_reason', sa.String(length=1024), nullable=False),
    sa.Column('facts', sa.Text(), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(), nullable=False),
    sa.Column('approved_by', sa.String(length=128), nullable=True),
    sa.Column('last_attested_at', sa.DateTime(), nullable=True),
    sa.Column('last_clock', sa.BigInteger(), nullable=True),
    sa.Column('last_reset_count', sa.BigInteger(), nullable=True),
    sa.Column('last_restart_count', sa.BigInteger(), nullable=True),
    sa.Column('last_event_log', sa.LargeBinary(), nullable=True),
    sa.Column('binding_key_public', sa.LargeBinary(), nullable=True),
    sa.Column('binding_key_thumbprint', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_hosts_cluster_id_clusters')),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_hosts_principal_id_principals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts')),
    sa.UniqueConstraint('ek_fingerprint', name=op.f('uq_hosts_ek_fingerprint')),
    sa.UniqueConstraint('name', name=op.f('uq_hosts_name')),
    sa.UniqueConstraint('principal_id', name=op.f('uq_hosts_principal_id'))
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hosts_cluster_id'), ['cluster_id'], unique=False)

    op.create_table('join_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('cluster_id', sa.String(length=36), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('used_by_host', sa.String(length=36), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_join_tokens_cluster_id_clusters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_join_tokens'))
    )
    with op.batch_alter_table('join_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_join_tokens_cluster_id'), ['cluster_id'], unique=False)

    op.create_table('attestation_nonces',
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('host_id', sa.String(length=36), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_attestation_nonces_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('nonce', name=op.f('pk_attestation_nonces'))
    )
    with op.batch_alter_table('attestation_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_attestation_nonces_host_id'), ['host_id'], unique=False)

    op.create_table('attestations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('host_id', sa.String(length=36), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('baseline', sa.String(length=160), nullable=True),
    sa.Column('reason', sa.String(length=1024), nullable=False),
    sa.Column('report', sa.Text(), nullable=True),
    sa.Column('rebooted', sa.Boolean(), nullable=True),
    sa.Column('pcr_digest', sa.String(length=128), nullable=True),
    sa.Column('token_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_attestations_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attestations'))
    )
    with op.batch_alter_table('attestations', schema=None) as batch_op:
        batch_op.create_index('ix_attestations_host_at', ['host_id', 'at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('attestations', schema=None) as batch_op:
        batch_op.drop_index('ix_attestations_host_at')

    op.drop_table('attestations')
    with op.batch_alter_table('attestation_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attestation_nonces_host_id'))

    op.drop_table('attestation_nonces')
    with op.batch_alter_table('join_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_join_tokens_cluster_id'))

    op.drop_table('join_tokens')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_cluster_id'))

    op.drop_table('hosts')
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrollments_expires_at'))
        batch_op.drop_index(batch_op.f('ix_enrollments_ek_fingerprint'))

    op.drop_table('enrollments')
