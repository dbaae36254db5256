CREATE TABLE "sluice"."secrets" (
	"name" text PRIMARY KEY NOT NULL,
	"value" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sluice"."sessions" (
	"id_hash" text PRIMARY KEY NOT NULL,
	"token_id" uuid NOT NULL,
	"csrf_token" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sluice"."tokens" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"token_hash" text NOT NULL,
	"role" text NOT NULL,
	"db_role" text,
	"created_by" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_used_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	CONSTRAINT "tokens_token_hash_unique" UNIQUE("token_hash"),
	CONSTRAINT "tokens_role_known" CHECK ("sluice"."tokens"."role" in ('admin', 'user'))
);
--> statement-breakpoint
ALTER TABLE "sluice"."tasks" ADD COLUMN "result_expired_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "sluice"."tasks" ADD COLUMN "owner_id" uuid;--> statement-breakpoint
ALTER TABLE "sluice"."tasks" ADD COLUMN "run_as_role" text;--> statement-breakpoint
ALTER TABLE "sluice"."uploads" ADD COLUMN "owner_id" uuid;--> statement-breakpoint
ALTER TABLE "sluice"."sessions" ADD CONSTRAINT "sessions_token_id_tokens_id_fk" FOREIGN KEY ("token_id") REFERENCES "sluice"."tokens"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "sessions_expiry" ON "sluice"."sessions" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "tasks_owner" ON "sluice"."tasks" USING btree ("owner_id","created_at");--> statement-breakpoint
CREATE INDEX "tasks_result_expiry" ON "sluice"."tasks" USING btree ("result_expires_at") WHERE "sluice"."tasks"."result_key" is not null;