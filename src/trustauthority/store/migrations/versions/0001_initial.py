"""Initial schema: principals, tokens, certificates, service keys, audit log, settings.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('sequence', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.Column('time', sa.String(length=40), nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('sequence', name=op.f('pk_audit_checkpoints'))
    )
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    # the empty chain: sequence -1, the genesis hash (audit.chain.GENESIS_HASH)
    op.execute(sa.text("INSERT INTO audit_head (id, sequence, entry_hash) "
                       "VALUES (1, -1, :genesis)").bindparams(genesis="0" * 64))
    op.create_table('audit_log',
    sa.Column('sequence', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('time', sa.String(length=40), nullable=False),
    sa.Column('principal', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=256), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('previous_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('sequence', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_action_sequence', ['action', 'sequence'], unique=False)
        batch_op.create_index('ix_audit_log_principal_sequence', ['principal', 'sequence'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_time'), ['time'], unique=False)

    op.create_table('principals',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=False),
    sa.Column('multiple_roles_approved', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_principals')),
    sa.UniqueConstraint('name', name=op.f('uq_principals_name'))
    )
    op.create_table('service_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('public_pem', sa.Text(), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=True),
    sa.Column('private_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('retired_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_service_keys'))
    )
    with op.batch_alter_table('service_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_keys_purpose'), ['purpose'], unique=False)

    op.create_table('settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_settings'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('principal_id', sa.String(length=36), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_api_tokens_principal_id_principals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_principal_id'), ['principal_id'], unique=False)

    op.create_table('client_certificates',
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('principal_id', sa.String(length=36), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=512), nullable=False),
    sa.Column('not_after', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_client_certificates_principal_id_principals')),
    sa.PrimaryKeyConstraint('fingerprint_sha256', name=op.f('pk_client_certificates')),
    sa.UniqueConstraint('serial', name=op.f('uq_client_certificates_serial'))
    )
    with op.batch_alter_table('client_certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_client_certificates_principal_id'), ['principal_id'], unique=False)

    op.create_table('principal_roles',
    sa.Column('principal_id', sa.String(length=36), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_principal_roles_principal_id_principals')),
    sa.PrimaryKeyConstraint('principal_id', 'role', name=op.f('pk_principal_roles'))
    )


def downgrade() -> None:
    op.drop_table('principal_roles')
    with op.batch_alter_table('client_certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_client_certificates_principal_id'))

    op.drop_table('client_certificates')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_principal_id'))

    op.drop_table('api_tokens')
    op.drop_table('settings')
    with op.batch_alter_table('service_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_keys_purpose'))

    op.drop_table('service_keys')
    op.drop_table('principals')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_time'))
        batch_op.drop_index('ix_audit_log_principal_sequence')
        batch_op.drop_index('ix_audit_log_action_sequence')

    op.drop_table('audit_log')
    op.drop_table('audit_head')
    op.drop_table('audit_checkpoints')
