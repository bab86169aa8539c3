"""web dashboard sessions (a hashed cookie key, tied to the API token that opened it)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uisession",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["apitoken.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_sha256"),
    )
    with op.batch_alter_table("uisession", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_uisession_token_id"), ["token_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_uisession_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("uisession", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_uisession_expires_at"))
        batch_op.drop_index(batch_op.f("ix_uisession_token_id"))
    op.drop_table("uisession")
