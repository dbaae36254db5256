CREATE SCHEMA IF NOT EXISTS "sluice";
--> statement-breakpoint
CREATE TABLE "sluice"."tasks" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"kind" text NOT NULL,
	"dataset" text NOT NULL,
	"state" text DEFAULT 'queued' NOT NULL,
	"params" jsonb NOT NULL,
	"progress_rows" bigint DEFAULT 0 NOT NULL,
	"progress_bytes" bigint DEFAULT 0 NOT NULL,
	"progress_total" bigint,
	"progress_percent" real DEFAULT 0 NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"max_attempts" integer DEFAULT 3 NOT NULL,
	"run_after" timestamp with time zone DEFAULT now() NOT NULL,
	"run_id" uuid,
	"locked_by" text,
	"lease_expires_at" timestamp with time zone,
	"cancel_requested_at" timestamp with time zone,
	"error_code" text,
	"error" text,
	"result_key" text,
	"result_name" text,
	"result_size" bigint,
	"result_sha256" text,
	"result_expires_at" timestamp with time zone,
	"details" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "tasks_state_known" CHECK ("sluice"."tasks"."state" in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
	CONSTRAINT "tasks_kind_known" CHECK ("sluice"."tasks"."kind" in ('export', 'import'))
);
--> statement-breakpoint
CREATE INDEX "tasks_claimable" ON "sluice"."tasks" USING btree ("run_after") WHERE "sluice"."tasks"."state" = 'queued';--> statement-breakpoint
CREATE INDEX "tasks_leased" ON "sluice"."tasks" USING btree ("lease_expires_at") WHERE "sluice"."tasks"."state" = 'running';--> statement-breakpoint
CREATE INDEX "tasks_recent" ON "sluice"."tasks" USING btree ("created_at");