"""memory of reviewed answers

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memoryentry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("correction_id", sa.Integer(), nullable=True),
        sa.Column("approved_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("approved_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("retired_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["correction_id"], ["correction.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("memoryentry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_memoryentry_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_memoryentry_updated_at"), ["updated_at"], unique=False)
    op.create_table(
        "memorywording",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["memoryentry.id"]),
        sa.ForeignKeyConstraint(["interaction_id"], ["interaction.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("memorywording", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_memorywording_entry_id"), ["entry_id"], unique=False)
    with op.batch_alter_table("interaction", schema=None) as batch_op:
        batch_op.add_column(sa.Column("memory_entry_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("memory_mode", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_interaction_memory_entry_id"), ["memory_entry_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("interaction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interaction_memory_entry_id"))
        batch_op.drop_column("memory_mode")
        batch_op.drop_column("memory_entry_id")
    with op.batch_alter_table("memorywording", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memorywording_entry_id"))
    op.drop_table("memorywording")
    with op.batch_alter_table("memoryentry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memoryentry_updated_at"))
        batch_op.drop_index(batch_op.f("ix_memoryentry_status"))
    op.drop_table("memoryentry")
